"""Context locals stay where they belong.

Concurrent requests on threads see only their own ``request`` and ``g``; a
plain thread cannot reach a request; work handed to a thread goes with plain
values (or an explicit copy of the context); two apps share no state.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import Flask, copy_current_request_context, current_app, g, request
from sqlalchemy import func, select
from werkzeug.serving import make_server

from {{ cookiecutter.package_name }}.background import NotPlainValueError, submit
from {{ cookiecutter.package_name }}.events.models import Event
from {{ cookiecutter.package_name }}.extensions import db

from support import checked_out

CONCURRENT_REQUESTS = 200


def add_marker_route(app: Flask) -> None:
    @app.get("/marker")
    def marker() -> dict:
        g.marker = request.headers["X-Marker"]
        # Yield the GIL so other requests run in between the write and read.
        time.sleep(0.005)
        return {
            "header": request.headers["X-Marker"],
            "g": g.marker,
            "arg": request.args["m"],
            "request_id": g.request_id,
        }


@pytest.fixture
def served_app(make_app: Callable[..., Flask]) -> Iterator[str]:
    """The app behind a real threaded WSGI server; yields its base URL."""
    app = make_app()
    add_marker_route(app)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


def test_concurrent_requests_see_only_their_own_context(served_app: str) -> None:
    def call(n: int) -> tuple[str, dict]:
        marker = f"marker-{n}"
        req = urllib.request.Request(  # noqa: S310 - a fixed http:// URL
            f"{served_app}/marker?m={marker}",
            headers={"X-Marker": marker, "X-Request-ID": f"rid-{n}"},
        )
        with urllib.request.urlopen(req, timeout=30) as response:  # noqa: S310
            return marker, json.loads(response.read())

    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(call, range(CONCURRENT_REQUESTS)))

    assert len(results) == CONCURRENT_REQUESTS
    for marker, body in results:
        n = marker.removeprefix("marker-")
        assert body == {
            "header": marker,
            "g": marker,
            "arg": marker,
            "request_id": f"rid-{n}",
        }


def test_a_plain_thread_cannot_touch_the_request(app: Flask) -> None:
    errors: list[BaseException] = []

    @app.get("/spawn")
    def spawn() -> dict:
        def read_request() -> None:
            try:
                request.headers.get("User-Agent")
            except RuntimeError as exc:
                errors.append(exc)

        worker = threading.Thread(target=read_request)
        worker.start()
        worker.join()
        return {}

    app.test_client().get("/spawn")
    assert len(errors) == 1
    assert "outside of request context" in str(errors[0])


def test_submit_runs_plain_work_in_an_app_context(app: Flask) -> None:
    def count_owner_events(owner_id: int) -> tuple[str, int]:
        count = db.session.scalar(
            select(func.count()).select_from(Event).where(Event.owner_id == owner_id)
        )
        return current_app.name, count

    @app.get("/handoff")
    def handoff() -> dict:
        owner_id = int(request.args["owner"])  # captured at the edge
        name, count = submit(count_owner_events, owner_id).result(timeout=10)
        return {"app": name, "count": count}

    body = app.test_client().get("/handoff?owner=7").get_json()
    assert body == {"app": app.name, "count": 0}
    assert checked_out(app) == 0


def test_submit_refuses_proxies_and_model_instances(app: Flask) -> None:
    outcomes: dict[str, str] = {}

    @app.get("/bad-handoff")
    def bad_handoff() -> dict:
        event = Event(owner_id=1, kind="k", amount=1, payload="")
        for label, args in {
            "request": (request,),
            "g": (g,),
            "nested": ({"items": [request]},),
            "model": (event,),
        }.items():
            try:
                submit(print, *args)
            except NotPlainValueError as exc:
                outcomes[label] = str(exc)
        return {}

    app.test_client().get("/bad-handoff")
    assert set(outcomes) == {"request", "g", "nested", "model"}
    assert "context-local proxy" in outcomes["request"]
    assert "argument 0['items'][0]" in outcomes["nested"]
    assert "pass its id" in outcomes["model"]


def test_copy_current_request_context_carries_the_request(app: Flask) -> None:
    @app.get("/copied")
    def copied() -> dict:
        seen: list[str] = []

        @copy_current_request_context
        def read_in_thread() -> None:
            seen.append(request.args["q"])

        worker = threading.Thread(target=read_in_thread)
        worker.start()
        worker.join()
        return {"seen": seen}

    assert app.test_client().get("/copied?q=hello").get_json() == {"seen": ["hello"]}


def test_two_apps_in_one_process_share_no_state(
    make_app: Callable[..., Flask], tmp_path
) -> None:
    first = make_app(MAX_CONTENT_LENGTH=111)
    second = make_app(
        MAX_CONTENT_LENGTH=222,
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'second.db'}",
    )

    @first.get("/only-on-first")
    def only_on_first() -> dict:
        return {}

    assert first.config["MAX_CONTENT_LENGTH"] == 111
    assert second.config["MAX_CONTENT_LENGTH"] == 222
    assert first.extensions is not second.extensions
    assert first.test_client().get("/only-on-first").status_code == 200
    assert second.test_client().get("/only-on-first").status_code == 404

    with first.app_context():
        first_engine = db.engine
    with second.app_context():
        second_engine = db.engine
    assert first_engine is not second_engine
    assert first_engine.url != second_engine.url

    created = first.test_client().post(
        "/api/events", json={"kind": "only.first", "amount": "1.00"}
    )
    assert created.status_code == 201
    event_id = created.get_json()["id"]
    assert second.test_client().get(f"/api/events/{event_id}").status_code == 404

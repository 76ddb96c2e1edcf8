"""``g`` stays light: a request that leaves a large object on ``g`` is
logged in development and fails the test in testing; ids, the identity, a
session handle and an ORM object pass.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import pytest
from flask import Flask, g
from sqlalchemy import select

from {{ cookiecutter.package_name }}.accounts import Scope, current_identity, require
from {{ cookiecutter.package_name }}.config import ConfigError, load_settings
from {{ cookiecutter.package_name }}.events.models import Event
from {{ cookiecutter.package_name }}.extensions import db
from {{ cookiecutter.package_name }}.http import g_guard
from {{ cookiecutter.package_name }}.http.g_guard import HeavyGError, estimated_size

# About 3.5 MB: what a query result parked on g looks like.
LARGE_ROWS = 10_000


def with_g_routes(app: Flask) -> Flask:
    @app.get("/heavy")
    def heavy() -> dict:
        g.rows = [{"id": i, "payload": f"{i:0100}"} for i in range(LARGE_ROWS)]
        return {"rows": len(g.rows)}

    @app.get("/light")
    @require(Scope.READ)
    def light() -> dict:
        """What belongs on g: small values and handles (the identity is
        there already)."""
        g.account_id = current_identity().account_id
        g.db = db.session
        g.event = db.session.scalars(select(Event).limit(1)).first()
        g.flags = {"beta": True, "tags": ["a", "b"]}
        return {"ok": True}

    return app


@pytest.fixture
def testing_app(make_app: Callable[..., Flask]) -> Flask:
    return with_g_routes(make_app())


@pytest.fixture
def development_app(make_app: Callable[..., Flask]) -> Flask:
    return with_g_routes(make_app(APP_ENV="development"))


def test_testing_fails_a_request_leaving_a_large_object_on_g(
    testing_app: Flask,
) -> None:
    assert testing_app.config["G_SIZE_CHECK"] == "fail"
    client = testing_app.test_client()
    with pytest.raises(HeavyGError, match=r"g\.rows \(about \d+ bytes\)"):
        client.get("/heavy")


def test_testing_passes_small_values_and_handles_on_g(testing_app: Flask) -> None:
    client = testing_app.test_client()
    client.post("/api/events", json={"kind": "sale", "amount": "1.00"})
    response = client.get("/light")
    assert response.status_code == 200, response.data


def test_development_logs_the_key_and_its_size(
    development_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    assert development_app.config["G_SIZE_CHECK"] == "warn"
    client = development_app.test_client()
    with caplog.at_level(logging.WARNING, logger=g_guard.log.name):
        response = client.get("/heavy", headers={"X-Request-ID": "heavy-1"})
        assert response.status_code == 200
        assert client.get("/light").status_code == 200
    warnings = [r for r in caplog.records if r.name == g_guard.log.name]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert warnings[0].levelno == logging.WARNING
    assert "g.rows (about" in message
    assert "GET /heavy" in message
    assert warnings[0].request_id == "heavy-1"
    assert "G_SIZE_LIMIT_BYTES=1048576" in message
    size = int(message.split("g.rows (about ")[1].split(" bytes")[0])
    assert 2_000_000 < size < 8_000_000


def test_the_limit_is_a_setting(make_app: Callable[..., Flask]) -> None:
    app = with_g_routes(make_app(G_SIZE_LIMIT_BYTES=64 * 1024 * 1024))
    assert app.test_client().get("/heavy").status_code == 200


def test_production_does_not_measure_unless_enabled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert load_settings("production").G_SIZE_CHECK == "off"
    monkeypatch.setenv("G_SIZE_CHECK", "warn")
    monkeypatch.setenv("G_SIZE_LIMIT_BYTES", "4096")
    enabled = load_settings("production")
    assert (enabled.G_SIZE_CHECK, enabled.G_SIZE_LIMIT_BYTES) == ("warn", 4096)


def test_off_measures_nothing(
    make_app: Callable[..., Flask],
) -> None:
    app = with_g_routes(make_app(G_SIZE_CHECK="off"))
    assert app.test_client().get("/heavy").status_code == 200


@pytest.mark.parametrize(
    ("name", "value"), [("G_SIZE_CHECK", "loud"), ("G_SIZE_LIMIT_BYTES", 0)]
)
def test_an_unusable_setting_is_refused(
    make_app: Callable[..., Flask], name: str, value: object
) -> None:
    with pytest.raises(ConfigError, match=name):
        make_app(**{name: value})


def exact_size(obj: object) -> int:
    """Every object reachable through containers, each once: the reference
    the estimate is checked against."""
    seen: set[int] = set()
    stack = [obj]
    total = 0
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        total += sys.getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set):
            stack.extend(item)
    return total


@pytest.mark.parametrize(
    "value",
    [
        [{"id": i, "name": f"row {i}"} for i in range(100_000)],
        [str(i) * 50 for i in range(200_000)],
        {"blob": b"x" * 5_000_000},
        [[i, i + 1] for i in range(2_000)],
    ],
    ids=["rows", "strings", "bytes", "small"],
)
def test_the_estimate_stays_close_past_its_node_budget(value: object) -> None:
    """Cut off after a few thousand objects, the estimate still lands
    within a factor of two of the exact size."""
    exact = exact_size(value)
    assert exact / 2 < estimated_size(value) < exact * 2


def test_shared_state_and_cycles_count_once() -> None:
    node: dict[str, object] = {"payload": "x" * 1000}
    node["self"] = node
    assert estimated_size(node) < 2_000
    assert estimated_size(db) < 10_000  # the extension, not every engine

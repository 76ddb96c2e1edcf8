"""A database that is frozen, slow or down costs a bounded wait and a 503.

The tests run the app in-process, and under gunicorn with the shipped
config, against a PostgreSQL server of this module's own (``pg_cluster``),
which they freeze with SIGSTOP, stop and start again; the shared test
server is never touched. The bounds asserted
are generous liveness bounds, far above the short timeouts set here.
"""

from __future__ import annotations

import http.client
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import create_engine, text
from werkzeug.test import TestResponse

from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.cli import seed_events
from {{ cookiecutter.package_name }}.config import normalize_database_url
from {{ cookiecutter.package_name }}.extensions import db

from pg_cluster import Cluster, private_cluster
from support import (
    CapturingTransport,
    account_id,
    free_port,
    issue_token,
    problem_of,
    process_group,
    wait_for,
)

T = TypeVar("T")
READINESS_TIMEOUT = 1
# Short bounds, so a frozen server costs each request a few seconds.
TIMEOUTS = {
    "DATABASE_CONNECT_TIMEOUT": "2",
    "DATABASE_STATEMENT_TIMEOUT": "1",
    "DATABASE_ANSWER_TIMEOUT": "2",
    "DATABASE_POOL_TIMEOUT": "2",
}
# The longest a request may take with the server frozen: the ping of a
# pooled connection and a new connection (the connect timeout each), and
# slack for a loaded machine.
FROZEN_BOUND = 2 + 2 + 6


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with private_cluster() as started:
        app = create_app({"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": started.url})
        with app.app_context():
            upgrade()
            db.engine.dispose()
        yield started


@pytest.fixture
def outage_app(
    cluster: Cluster,
    make_app: Callable[..., Flask],
    monkeypatch: pytest.MonkeyPatch,
    sentry_transport: CapturingTransport,
) -> Iterator[Flask]:
    """An app on the module's server with short timeouts, reporting to
    ``sentry_transport``; the server is running again after the test."""
    for name, value in TIMEOUTS.items():
        monkeypatch.setenv(name, value)
    app = make_app(
        SQLALCHEMY_DATABASE_URI=cluster.url,
        READINESS_TIMEOUT_SECONDS=READINESS_TIMEOUT,
        SENTRY_DSN="https://key@sentry.invalid/1",
        SENTRY_TRANSPORT=sentry_transport,
    )
    yield app
    if cluster.frozen:
        cluster.thaw()
    if cluster.server is None:
        cluster.start()


def timed(call: Callable[[], T]) -> tuple[T, float]:
    """What ``call`` returned, and how many seconds it took."""
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def assert_unavailable(response: TestResponse) -> dict[str, Any]:
    assert response.status_code == 503, response.data
    problem = problem_of(response)
    assert response.headers["Retry-After"].isdigit()
    assert "SELECT" not in response.get_data(as_text=True)
    return problem


def errors_of(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_frozen_server_gives_503_in_bounded_time_and_recovers(
    outage_app: Flask,
    cluster: Cluster,
    caplog: pytest.LogCaptureFixture,
    sentry_transport: CapturingTransport,
) -> None:
    client = outage_app.test_client()
    probe = outage_app.test_client(token=None)
    assert client.get("/api/events").status_code == 200  # token issued, pool warm
    assert probe.get("/readyz").status_code == 200

    cluster.freeze()
    with caplog.at_level(logging.INFO):
        ready, ready_took = timed(lambda: probe.get("/readyz"))
        health, health_took = timed(lambda: probe.get("/healthz"))
        first, first_took = timed(lambda: client.get("/api/events"))
        second, second_took = timed(lambda: client.get("/api/events"))

    assert ready.status_code == 503
    assert problem_of(ready)["checks"] == {"database": "unreachable"}
    assert ready_took < READINESS_TIMEOUT + 3
    assert health.status_code == 200
    assert health_took < 1
    for response, took in ((first, first_took), (second, second_took)):
        assert_unavailable(response)
        assert took < FROZEN_BOUND
    errors = errors_of(caplog)
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "database unavailable" in errors[0].getMessage()
    assert errors[0].exc_info is None
    assert not any(r.exc_info for r in caplog.records)
    # The burst began with /readyz, outside any API request.
    assert errors[0].request_id == ready.headers["X-Request-ID"]
    sentry_events = sentry_transport.events()
    assert len(sentry_events) == 1, sentry_events

    caplog.clear()
    cluster.thaw()
    with caplog.at_level(logging.INFO):
        assert probe.get("/readyz").status_code == 200
        assert client.get("/api/events").status_code == 200
    assert not errors_of(caplog)
    assert any("answering again" in r.getMessage() for r in caplog.records)


def test_a_stopped_server_gives_503_until_it_is_back(
    outage_app: Flask, cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    client = outage_app.test_client()
    assert client.get("/api/events").status_code == 200

    cluster.stop()
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            response, took = timed(lambda: client.get("/api/events"))
            assert_unavailable(response)
            assert took < FROZEN_BOUND
        assert outage_app.test_client(token=None).get("/readyz").status_code == 503
    errors = errors_of(caplog)
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].request_id != "-"
    assert not any(r.exc_info for r in caplog.records)

    cluster.start()
    assert client.get("/api/events").status_code == 200
    assert outage_app.test_client(token=None).get("/readyz").status_code == 200


def test_an_export_meeting_a_stopped_server_is_a_503_not_a_broken_file(
    cluster: Cluster,
    make_app: Callable[..., Flask],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cached token lets the request past authentication to the export,
    whose first chunk, made in the view, meets the stopped server: the
    client gets a problem, not a 200 that breaks off or gunicorn's HTML."""
    for name, value in TIMEOUTS.items():
        monkeypatch.setenv(name, value)
    app = make_app(SQLALCHEMY_DATABASE_URI=cluster.url, TOKEN_CACHE_SECONDS=300)
    client = app.test_client()
    paths = ["/api/events/export.csv", "/api/events/export.ndjson"]
    assert [client.get(path).status_code for path in paths] == [200, 200]
    cluster.stop()
    try:
        for path in paths:
            response, took = timed(lambda path=path: client.get(path))
            assert_unavailable(response)
            assert took < FROZEN_BOUND
    finally:
        cluster.start()
    assert [client.get(path).status_code for path in paths] == [200, 200]


def test_a_statement_over_the_statement_timeout_gives_503(outage_app: Flask) -> None:
    def sleep() -> dict[str, str]:
        db.session.execute(text("SELECT pg_sleep(5)"))
        return {"slept": "yes"}

    outage_app.add_url_rule("/api/test-sleep", view_func=sleep)
    response, took = timed(lambda: outage_app.test_client().get("/api/test-sleep"))
    assert_unavailable(response)
    assert took < 4  # cancelled at 1 s, not after 5
    assert outage_app.test_client().get("/api/events").status_code == 200


def fetch(port: int, path: str, token: str | None = None) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:  # closed on failure too: gunicorn may drop a connection as it boots
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        return response
    finally:
        connection.close()


def test_gunicorn_answers_503_while_the_server_is_frozen(
    outage_app: Flask, cluster: Cluster, tmp_path: Path
) -> None:
    """The same under gunicorn with the shipped config, as production runs."""
    token = issue_token(outage_app)
    stdout = tmp_path / "gunicorn.log"
    readiness = {"READINESS_TIMEOUT_SECONDS": str(READINESS_TIMEOUT)}
    with gunicorn_on(cluster, stdout, readiness) as port:
        assert fetch(port, "/api/events", token).status == 200

        cluster.freeze()
        ready, ready_took = timed(lambda: fetch(port, "/readyz"))
        api, api_took = timed(lambda: fetch(port, "/api/events", token))
        assert ready.status == 503
        assert ready_took < READINESS_TIMEOUT + 3
        assert api.status == 503
        assert api.getheader("Content-Type") == "application/problem+json"
        assert (api.getheader("Retry-After") or "").isdigit()
        assert api_took < FROZEN_BOUND

        cluster.thaw()
        assert fetch(port, "/readyz").status == 200
        assert fetch(port, "/api/events", token).status == 200
    log = stdout.read_text()
    assert log.count(" ERROR ") == 1, log
    assert "Traceback" not in log


def test_an_export_cut_off_mid_stream_under_gunicorn_ends_incomplete(
    outage_app: Flask, cluster: Cluster, tmp_path: Path
) -> None:
    """The connection of a streaming export is killed in PostgreSQL after
    the first bytes went out: under gunicorn with the shipped config the
    client gets no terminating chunk (an incomplete transfer, never a clean
    end of a truncated file), and the app logs it once, with the request
    id; no log line holds the SQL."""
    token = issue_token(outage_app)
    # Megabytes of CSV, so the COPY outlasts what the socket buffers hold;
    # loaded by an app without this module's one-second statement timeout.
    loader = create_app(
        {
            "APP_ENV": "testing",
            "SQLALCHEMY_DATABASE_URI": cluster.url,
            "DATABASE_STATEMENT_TIMEOUT": 0,
            "DATABASE_ANSWER_TIMEOUT": 60,
        }
    )
    with loader.app_context():
        seed_events(account_id(outage_app), 50_000, seed=7)
        db.engine.dispose()
    stdout = tmp_path / "gunicorn.log"
    named = {"DATABASE_APPLICATION_NAME": "cut-off-export"}
    with gunicorn_on(cluster, stdout, named) as port:
        request = (
            "GET /api/events/export.csv HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\nX-Request-ID: cut-off-1\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
            client.sendall(request.encode())
            received = client.recv(65536)  # the head and the first bytes
            assert received.startswith(b"HTTP/1.1 200 "), received[:200]
            assert b"transfer-encoding: chunked" in received.lower()
            admin = create_engine(normalize_database_url(cluster.url))
            with admin.begin() as connection:
                killed = connection.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE application_name = 'cut-off-export'"
                        " AND query LIKE 'COPY%'"
                    )
                ).scalar_one()
            admin.dispose()
            assert killed == 1
            # Until gunicorn closes the connection (a clean end would keep
            # it open, and this read would time out instead).
            while data := client.recv(65536):
                received += data
        # No terminating zero-length chunk: the client knows it is cut off.
        assert not received.endswith(b"\r\n0\r\n\r\n")
        wait_for(lambda: "failed mid-stream" in stdout.read_text(), what="the log")
    log = stdout.read_text()
    # Once by the app, with the request id (gunicorn adds its own line).
    [line] = [line for line in log.splitlines() if "failed mid-stream" in line]
    assert "cut-off-1" in line
    assert "SELECT" not in log, log
    assert "COPY" not in log, log


@contextmanager
def gunicorn_on(cluster: Cluster, stdout: Path, env: dict[str, str]) -> Iterator[int]:
    """One worker under the shipped config on ``cluster``'s database, with
    ``env`` added, logging to ``stdout``; yields its port once it answers."""
    port = free_port()
    full_env = {
        **os.environ,
        "APP_ENV": "testing",
        "DATABASE_URL": cluster.url,
        **env,
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "1",
        "GUNICORN_GRACEFUL_TIMEOUT": "5",
    }
    command = [sys.executable, "-m", "gunicorn", "-c", "deploy/gunicorn.conf.py"]
    with process_group(command, full_env, stdout, grace=10) as process:
        wait_for(
            lambda: process.poll() is not None or fetch_status(port, "/healthz"),
            timeout=60,
            what="gunicorn to answer",
        )
        assert process.poll() is None, stdout.read_text()
        yield port


def fetch_status(port: int, path: str) -> int | None:
    try:
        return fetch(port, path).status
    except OSError:
        return None

"""Error reports to Sentry, caught by an in-memory transport.

The events are the ones the SDK would send to a Sentry server; only the
last step, the HTTP request to the server, is replaced.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import sentry_sdk
from flask import Flask, abort, request

from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.config import ConfigError

from support import CapturingTransport, problem_of

DSN = "https://public@sentry.example.invalid/1"


def add_failing_routes(app: Flask) -> Flask:
    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("exploded on purpose")

    @app.get("/boom-with-environ")
    def boom_with_environ() -> str:
        environ = {  # noqa: F841 - a local variable Sentry reports
            name: request.environ.get(name)
            for name in ("REMOTE_ADDR", "HTTP_AUTHORIZATION", "HTTP_COOKIE")
        }
        raise RuntimeError("exploded with the environ in scope")

    @app.get("/conflict")
    def conflict() -> str:
        abort(409, "Already exists.")

    return app


@pytest.fixture
def reporting_app(
    make_app: Callable[..., Flask], sentry_transport: CapturingTransport
) -> Flask:
    return add_failing_routes(
        make_app(SENTRY_DSN=DSN, SENTRY_TRANSPORT=sentry_transport)
    )


def test_an_unhandled_error_is_reported_once_with_its_request_id(
    reporting_app: Flask, sentry_transport: CapturingTransport
) -> None:
    response = reporting_app.test_client().get(
        "/boom", headers={"X-Request-ID": "req-sentry-1"}
    )
    assert response.status_code == 500
    assert problem_of(response)["request_id"] == "req-sentry-1"
    [event] = sentry_transport.events()
    assert event["tags"]["request_id"] == "req-sentry-1"
    [exception] = event["exception"]["values"]
    assert exception["type"] == "RuntimeError"
    assert exception["value"] == "exploded on purpose"
    assert event["environment"] == "testing"


def test_problem_responses_are_not_reported(
    reporting_app: Flask, sentry_transport: CapturingTransport
) -> None:
    client = reporting_app.test_client()
    answers = [
        client.get("/conflict"),
        client.get("/no-such-page"),
        client.delete("/healthz"),
        client.post("/api/events", data="{not json", content_type="application/json"),
        client.post("/api/events", json={"kind": "k", "amount": "x"}),
    ]
    assert [answer.status_code for answer in answers] == [409, 404, 405, 400, 400]
    assert sentry_transport.events() == []


def test_no_personal_data_is_sent(
    reporting_app: Flask, sentry_transport: CapturingTransport
) -> None:
    reporting_app.test_client().get(
        "/boom-with-environ",
        headers={"Authorization": "Bearer token-xyz", "Cookie": "session=cookie-xyz"},
        environ_base={"REMOTE_ADDR": "203.0.113.9"},
    )
    [event] = sentry_transport.events()
    [frame] = [
        frame
        for frame in event["exception"]["values"][0]["stacktrace"]["frames"]
        if frame["function"] == "boom_with_environ"
    ]
    assert set(frame["vars"]["environ"]) == {
        "REMOTE_ADDR",
        "HTTP_AUTHORIZATION",
        "HTTP_COOKIE",
    }
    sent = json.dumps(event)
    assert "token-xyz" not in sent
    assert "cookie-xyz" not in sent
    assert "203.0.113.9" not in sent
    assert not sentry_sdk.get_client().should_send_default_pii()


def test_release_environment_and_trace_rate_come_from_the_environment(
    make_app: Callable[..., Flask],
    sentry_transport: CapturingTransport,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SENTRY_RELEASE", "0123abc")
    monkeypatch.setenv("SENTRY_ENVIRONMENT", "staging")
    monkeypatch.setenv("SENTRY_TRACES_SAMPLE_RATE", "0.25")
    app = add_failing_routes(
        make_app(SENTRY_DSN=DSN, SENTRY_TRANSPORT=sentry_transport)
    )
    app.test_client().get("/boom")
    [event] = sentry_transport.events()
    assert event["release"] == "0123abc"
    assert event["environment"] == "staging"
    assert sentry_sdk.get_client().options["traces_sample_rate"] == 0.25


def test_tracing_samples_nothing_by_default(reporting_app: Flask) -> None:
    assert sentry_sdk.get_client().options["traces_sample_rate"] == 0.0


def test_without_a_dsn_nothing_is_started_or_sent(
    make_app: Callable[..., Flask], sentry_transport: CapturingTransport
) -> None:
    app = add_failing_routes(make_app(SENTRY_TRANSPORT=sentry_transport))
    assert not sentry_sdk.get_client().is_active()
    response = app.test_client().get("/boom")
    assert response.status_code == 500
    problem_of(response)
    assert sentry_transport.envelopes == []


def test_one_client_serves_every_app_of_the_process(
    make_app: Callable[..., Flask], sentry_transport: CapturingTransport
) -> None:
    make_app(SENTRY_DSN=DSN, SENTRY_TRANSPORT=sentry_transport)
    first_client = sentry_sdk.get_client()
    assert first_client.is_active()
    second = add_failing_routes(
        make_app(SENTRY_DSN=DSN, SENTRY_TRANSPORT=CapturingTransport())
    )
    assert sentry_sdk.get_client() is first_client
    second.test_client().get("/boom", headers={"X-Request-ID": "req-second-app"})
    [event] = sentry_transport.events()
    assert event["tags"]["request_id"] == "req-second-app"


@pytest.mark.parametrize("rate", ["1.5", "-0.1", "nan", "often"])
def test_a_bad_trace_rate_stops_the_app(
    monkeypatch: pytest.MonkeyPatch, rate: str
) -> None:
    monkeypatch.setenv("SENTRY_DSN", DSN)
    monkeypatch.setenv("SENTRY_TRACES_SAMPLE_RATE", rate)
    with pytest.raises(
        ConfigError, match="SENTRY_TRACES_SAMPLE_RATE must be a number from 0 to 1"
    ):
        create_app({"APP_ENV": "testing"})
    assert not sentry_sdk.get_client().is_active()

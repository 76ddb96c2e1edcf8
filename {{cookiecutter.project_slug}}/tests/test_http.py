"""The HTTP layer: JSON types, problem+json errors, security headers."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from flask import Flask, abort, request
from flask.testing import FlaskClient

from {{ cookiecutter.package_name }}.http.security import HEADERS

from support import problem_of


@pytest.fixture
def app(make_app) -> Flask:
    app = make_app(MAX_CONTENT_LENGTH=1024)

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("secret internals: password=hunter2")

    @app.get("/abort")
    def aborted() -> str:
        abort(409, "Already exists.")

    @app.post("/echo")
    def echo() -> dict:
        return {"got": request.get_json()}

    @app.get("/types")
    def types() -> dict:
        return {
            "decimal": Decimal("12345678901234567890.123456789"),
            "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
            "utc": datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC),
            "cet": datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=1))),
        }

    return app


def test_json_provider_keeps_exact_types(client: FlaskClient) -> None:
    body = json.loads(client.get("/types").data)
    assert body == {
        "decimal": "12345678901234567890.123456789",
        "uuid": "12345678-1234-5678-1234-567812345678",
        "utc": "2026-01-02T03:04:05.600000+00:00",
        "cet": "2026-01-02T03:04:05+01:00",
    }


def test_request_numbers_arrive_as_exact_decimals(client: FlaskClient) -> None:
    response = client.post("/echo", json={"amount": 0.1})
    assert response.status_code == 200
    # 0.1 parsed as a float would print as 0.1 but add up wrong; as a
    # Decimal it comes back as the exact string the client sent.
    assert response.get_json()["got"] == {"amount": "0.1"}


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("get", "/no-such-page", {}, 404),
        ("delete", "/healthz", {}, 405),
        ("get", "/abort", {}, 409),
        ("get", "/boom", {}, 500),
        (
            "post",
            "/echo",
            {"data": "{not json", "content_type": "application/json"},
            400,
        ),
        ("post", "/echo", {"data": "a=1", "content_type": "text/plain"}, 415),
        ("post", "/echo", {"json": {"blob": "x" * 4096}}, 413),
    ],
)
def test_every_error_is_problem_json_with_security_headers(
    client: FlaskClient, method: str, path: str, kwargs: dict, status: int
) -> None:
    response = getattr(client, method)(path, **kwargs)
    assert response.status_code == status
    body = problem_of(response)
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert b"<html" not in response.data.lower()
    for name, value in HEADERS.items():
        assert response.headers[name] == value


def test_405_keeps_the_allow_header(client: FlaskClient) -> None:
    response = client.delete("/healthz")
    assert "GET" in response.headers["Allow"]


def test_unhandled_error_hides_internals_and_logs_them(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = client.get("/boom", headers={"X-Request-ID": "trace-boom-1"})
    assert response.status_code == 500
    assert b"hunter2" not in response.data
    assert b"Traceback" not in response.data
    assert problem_of(response)["request_id"] == "trace-boom-1"
    logged = [
        r for r in caplog.records if r.exc_info and "hunter2" in str(r.exc_info[1])
    ]
    assert logged, "the exception was not logged"
    assert logged[0].request_id == "trace-boom-1"


def test_success_responses_carry_security_headers(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize(
    ("hops", "remote_addr", "scheme", "host"),
    [
        (0, "127.0.0.1", "http", "localhost"),
        (1, "198.51.100.9", "https", "api.example.com"),
    ],
)
def test_forwarded_headers_are_trusted_for_the_configured_hops_only(
    make_app: Callable[..., Flask], hops: int, remote_addr: str, scheme: str, host: str
) -> None:
    app = make_app(PROXY_HOPS=hops)

    @app.get("/whoami")
    def whoami() -> dict:
        return {
            "addr": request.remote_addr,
            "scheme": request.scheme,
            "host": request.host,
        }

    response = app.test_client().get(
        "/whoami",
        headers={
            # A forged first entry, then the address nginx saw.
            "X-Forwarded-For": "203.0.113.66, 198.51.100.9",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "api.example.com",
        },
    )
    assert response.get_json() == {"addr": remote_addr, "scheme": scheme, "host": host}

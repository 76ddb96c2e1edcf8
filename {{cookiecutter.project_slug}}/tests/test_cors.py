"""CORS: off by default; listed origins may call /api/ from a browser,
preflights included; nobody else, and nothing outside /api/."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.config import ConfigError

APP_ORIGIN = "https://app.example.com"
ADMIN_ORIGIN = "https://admin.example.com:8443"
ALLOWED = f"{APP_ORIGIN}, {ADMIN_ORIGIN}"
ALLOW_ORIGIN = "Access-Control-Allow-Origin"


def cors_headers(response: TestResponse) -> dict[str, str]:
    return {
        name: value
        for name, value in response.headers.items()
        if name.lower().startswith("access-control-")
    }


def preflight(
    client: Any, origin: str, method: str = "POST", path: str = "/api/events"
) -> TestResponse:
    """What a browser sends before a cross-origin POST with a token and JSON."""
    response: TestResponse = client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    return response


def test_no_cors_headers_by_default(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    client = app.test_client()
    response = client.get("/api/events", headers={"Origin": APP_ORIGIN})
    assert response.status_code == 200
    assert cors_headers(response) == {}
    assert cors_headers(preflight(app.test_client(token=None), APP_ORIGIN)) == {}


def test_an_allowed_origin_gets_cors_headers(make_app: Callable[..., Flask]) -> None:
    app = make_app(CORS_ORIGINS=ALLOWED)
    client = app.test_client()
    for origin in (APP_ORIGIN, ADMIN_ORIGIN):
        response = client.get("/api/events", headers={"Origin": origin})
        assert response.status_code == 200
        assert response.headers[ALLOW_ORIGIN] == origin
        exposed = {
            name.strip().lower()
            for name in response.headers["Access-Control-Expose-Headers"].split(",")
        }
        assert exposed == {"x-request-id", "location", "retry-after"}
        assert "Access-Control-Allow-Credentials" not in response.headers
        assert "Origin" in response.headers["Vary"]
    # Not a cross-origin request: nothing to allow, and the list stays private.
    assert cors_headers(client.get("/api/events")) == {}
    created = client.post(
        "/api/events",
        json={"kind": "purchase", "amount": "19.99"},
        headers={"Origin": APP_ORIGIN},
    )
    assert created.status_code == 201
    assert created.headers[ALLOW_ORIGIN] == APP_ORIGIN
    assert created.headers["Location"]


def test_errors_carry_cors_headers_so_the_browser_app_can_read_them(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(CORS_ORIGINS=APP_ORIGIN, RATELIMIT_FAILED_AUTH="1 per minute")
    client = app.test_client(token=None)
    unauthorized = client.get("/api/events", headers={"Origin": APP_ORIGIN})
    assert unauthorized.status_code == 401
    assert unauthorized.headers[ALLOW_ORIGIN] == APP_ORIGIN
    limited = client.get("/api/events", headers={"Origin": APP_ORIGIN})
    assert limited.status_code == 429
    assert limited.headers[ALLOW_ORIGIN] == APP_ORIGIN
    assert "Retry-After" in limited.headers["Access-Control-Expose-Headers"]
    # The preflight of a blocked address still passes: the 429 is readable.
    assert preflight(client, APP_ORIGIN).status_code == 200


def test_preflight_from_an_allowed_origin(make_app: Callable[..., Flask]) -> None:
    app = make_app(CORS_ORIGINS=ALLOWED)
    # Browsers send preflights without credentials.
    client = app.test_client(token=None)
    response = preflight(client, ADMIN_ORIGIN)
    assert response.status_code == 200
    assert response.headers[ALLOW_ORIGIN] == ADMIN_ORIGIN
    methods = {
        m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")
    }
    assert {"GET", "POST"} <= methods
    allowed = {
        h.strip().lower()
        for h in response.headers["Access-Control-Allow-Headers"].split(",")
    }
    assert allowed == {"authorization", "content-type"}
    assert response.headers["Access-Control-Max-Age"] == "600"
    # Deeper paths too (flask-cors 6 matches resource patterns in a new order).
    deeper = preflight(client, APP_ORIGIN, "GET", "/api/events/export.csv")
    assert deeper.headers[ALLOW_ORIGIN] == APP_ORIGIN


def test_preflight_does_not_allow_headers_the_api_does_not_read(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(CORS_ORIGINS=APP_ORIGIN)
    response = app.test_client(token=None).options(
        "/api/events",
        headers={
            "Origin": APP_ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, x-internal-admin",
        },
    )
    assert response.headers["Access-Control-Allow-Headers"].lower() == "authorization"


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example.net",
        "https://app.example.com.evil.example.net",
        "http://app.example.com",
        "https://admin.example.com",
        "null",
    ],
)
def test_another_origin_gets_no_cors_headers(
    make_app: Callable[..., Flask], origin: str
) -> None:
    app = make_app(CORS_ORIGINS=ALLOWED)
    response = app.test_client().get("/api/events", headers={"Origin": origin})
    # The request itself is served: CORS is the browser's check, not auth.
    assert response.status_code == 200
    assert cors_headers(response) == {}
    assert "Origin" in response.headers["Vary"]
    assert cors_headers(preflight(app.test_client(token=None), origin)) == {}


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/no-such-page"])
def test_routes_outside_the_api_get_no_cors_headers(
    make_app: Callable[..., Flask], path: str
) -> None:
    app = make_app(CORS_ORIGINS=ALLOWED)
    client = app.test_client()
    assert cors_headers(client.get(path, headers={"Origin": APP_ORIGIN})) == {}
    assert cors_headers(preflight(client, APP_ORIGIN, "GET", path)) == {}


def test_any_origin_with_a_wildcard(make_app: Callable[..., Flask]) -> None:
    app = make_app(CORS_ORIGINS="*")
    response = app.test_client().get(
        "/api/events", headers={"Origin": "https://anywhere.example.org"}
    )
    assert response.headers[ALLOW_ORIGIN] == "*"
    assert "Access-Control-Allow-Credentials" not in response.headers


def test_credentials_for_listed_origins(make_app: Callable[..., Flask]) -> None:
    app = make_app(CORS_ORIGINS=APP_ORIGIN, CORS_ALLOW_CREDENTIALS=True)
    response = preflight(app.test_client(token=None), APP_ORIGIN)
    assert response.headers[ALLOW_ORIGIN] == APP_ORIGIN
    assert response.headers["Access-Control-Allow-Credentials"] == "true"


def test_wildcard_with_credentials_is_refused_at_create_app(
    make_app: Callable[..., Flask],
) -> None:
    with pytest.raises(ConfigError, match="CORS_ALLOW_CREDENTIALS"):
        make_app(CORS_ORIGINS="*", CORS_ALLOW_CREDENTIALS=True)


@pytest.mark.parametrize("app_env", ["development", "testing", "production"])
def test_wildcard_with_credentials_is_refused_in_every_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, app_env: str
) -> None:
    monkeypatch.setenv("APP_ENV", app_env)
    monkeypatch.setenv("SECRET_KEY", "s" * 48)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'app.db'}")
{%- if cookiecutter.use_celery == "y" %}
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
{%- endif %}
    monkeypatch.setenv("CORS_ORIGINS", "*")
    monkeypatch.setenv("CORS_ALLOW_CREDENTIALS", "true")
    with pytest.raises(ConfigError, match=r"CORS_ALLOW_CREDENTIALS .*CORS_ORIGINS=\*"):
        create_app()
    monkeypatch.setenv("CORS_ALLOW_CREDENTIALS", "false")
    assert create_app().config["CORS_ORIGINS"] == ["*"]


@pytest.mark.parametrize(
    "origins",
    [
        "https://app.example.com/",
        "https://app.example.com/path",
        "app.example.com",
        "null",
        "https://*.example.com",
        f"*, {APP_ORIGIN}",
    ],
)
def test_malformed_origins_are_refused_by_name(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch, origins: str
) -> None:
    monkeypatch.setenv("CORS_ORIGINS", origins)
    with pytest.raises(ConfigError, match="CORS_ORIGINS"):
        make_app()

"""Fixtures: a fresh app from the factory for every test, and an isolated
database behind it.

SQLite by default: every test gets its own database file. When DATABASE_URL
points at PostgreSQL, the session creates its own database on that server,
migrates it, empties the tables after every test and drops it at the end.
"""

from __future__ import annotations

import gc
import os
{%- if cookiecutter.use_celery == "y" %}
import uuid
{%- endif %}
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk
from flask import Flask
from flask.testing import FlaskClient
{%- if cookiecutter.use_celery == "y" %}
from redis import Redis
from redis.exceptions import RedisError
{%- endif %}
from sqlalchemy import create_engine, text

from {{ cookiecutter.package_name }} import create_app, tracing
{%- if cookiecutter.use_celery == "y" %}
from {{ cookiecutter.package_name }}.celery_app import close_celery
{%- endif %}
from {{ cookiecutter.package_name }}.config import normalize_database_url
from {{ cookiecutter.package_name }}.extensions import db

from support import ApiClient, CapturingTransport, Tenant{% if cookiecutter.use_celery == "y" %}, skip_or_fail{% endif %}

# Variables a developer's shell may carry that would change what tests see.
_APP_VARIABLES = (
    "APP_ENV",
    "SECRET_KEY",
    "TRUSTED_HOSTS",
    "MAX_CONTENT_LENGTH",
    "SENTRY_DSN",
    "SENTRY_ENVIRONMENT",
    "SENTRY_RELEASE",
    "SENTRY_TRACES_SAMPLE_RATE",
    "METRICS_ENABLED",
    "PROMETHEUS_MULTIPROC_DIR",
    "RATELIMIT_ENABLED",
    "RATELIMIT_FAILED_AUTH",
    "RATELIMIT_PER_TOKEN",
    "RATELIMIT_STORAGE_URI",
    "RATELIMIT_KEY_PREFIX",
    "CORS_ORIGINS",
    "CORS_ALLOW_CREDENTIALS",
    "CORS_MAX_AGE",
    "DATABASE_POOL_TIMEOUT",
    "DATABASE_CONNECT_TIMEOUT",
    "DATABASE_STATEMENT_TIMEOUT",
    "DATABASE_ANSWER_TIMEOUT",
    "DATABASE_KEEPALIVES_IDLE",
    "DATABASE_TCP_USER_TIMEOUT",
    "DATABASE_BUSY_TIMEOUT",
{%- if cookiecutter.use_celery == "y" %}
    # The session's Redis is read before this list is cleared (redis_server).
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "CELERY_KEY_PREFIX",
    "WORKER_METRICS_HOST",
    "WORKER_METRICS_PORT",
{%- endif %}
    # OpenTelemetry's own (tracing.py).
    "OTEL_SDK_DISABLED",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
)


def _server_url() -> str | None:
    url = os.environ.get("DATABASE_URL", "")
    return url if url.startswith(("postgres://", "postgresql")) else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """A migrated database of this session's own, or None on SQLite."""
    server_url = _server_url()
    if server_url is None:
        yield None
        return
    from pg_database import temporary_database

    with temporary_database(server_url) as url:
        app = create_app({"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": url})
        with app.app_context():
            from flask_migrate import upgrade

            upgrade()
            db.engine.dispose()
        yield url


@pytest.fixture(autouse=True)
def clean_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[None]:
    """Each test starts from the same environment and cannot leak into the next."""
    saved = dict(os.environ)
    for name in _APP_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INSTANCE_PATH", str(tmp_path / "instance"))
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def database_url(postgres_url: str | None, tmp_path: Path) -> Iterator[str]:
    """This test's database: a new SQLite file, or the session's PostgreSQL
    database, emptied when the test ends."""
    if postgres_url is None:
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    yield postgres_url
    engine = create_engine(normalize_database_url(postgres_url))
    tables = ", ".join(table.name for table in db.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables}"))
    engine.dispose()


@pytest.fixture
def make_app(database_url: str) -> Iterator[Callable[..., Flask]]:
    """Build apps from the factory, each with its own engine and pool."""
    apps: list[Flask] = []

    def factory(*, schema: bool = True, **overrides: Any) -> Flask:
        config = {"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": database_url}
        config.update(overrides)
        app = create_app(config)
        app.test_client_class = ApiClient
        with app.app_context():
            # The PostgreSQL database was migrated once for the session.
            if schema and db.engine.dialect.name == "sqlite":
                db.create_all()
        apps.append(app)
        return app

    yield factory
    for app in apps:
        with app.app_context():
            db.engine.dispose()
{%- if cookiecutter.use_celery == "y" %}
        close_celery(app.extensions["celery"])
{%- endif %}
    # Clients kept per thread (a broker's) are freed with the app objects:
    # collect them now, inside the test that made them, not in a later one.
    gc.collect()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def tenants(app: Flask) -> tuple[Tenant, Tenant]:
    return Tenant(app, "alice"), Tenant(app, "bob")


@pytest.fixture
def empty_app(
    make_app: Callable[..., Flask], tmp_path: Path, postgres_url: str | None
) -> Iterator[Flask]:
    """An app on a database with no tables yet."""
    if postgres_url:
        from pg_database import temporary_database

        with temporary_database(postgres_url) as url:
            app = make_app(schema=False, SQLALCHEMY_DATABASE_URI=url)
            yield app
            # Its connections closed, so the database can be dropped.
            with app.app_context():
                db.engine.dispose()
        return
    yield make_app(schema=False, SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/m.db")


@pytest.fixture
def sentry_transport() -> CapturingTransport:
    """Pass as ``SENTRY_TRANSPORT`` (with a ``SENTRY_DSN``) to see the events."""
    return CapturingTransport()


@pytest.fixture(autouse=True)
def no_tracing_after_test() -> Iterator[None]:
    """Tracing belongs to the process too: stop what a test started."""
    yield
    tracing.shutdown_tracing()


@pytest.fixture(autouse=True)
def no_sentry_client_after_test() -> Iterator[None]:
    """Sentry's client is global to the process: close and drop whatever
    client a test started, so no later test reports to it."""
    yield
    client = sentry_sdk.get_client()
    if client.is_active():
        client.close()
    sentry_sdk.get_global_scope().set_client(None)
{%- if cookiecutter.use_celery == "y" %}


@pytest.fixture(scope="session")
def redis_server() -> Iterator[tuple[str, str]]:
    """(REDIS_URL, key prefix) of this session; its keys are deleted after.

    Without a reachable Redis the Celery tests skip on a laptop, and fail
    under CI=true, where a missing service is a broken machine.
    """
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    client = Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except RedisError as exc:
        skip_or_fail(f"Redis at {url} is not reachable: {exc}")
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    yield url, prefix
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    client.close()


@pytest.fixture
def celery_env(
    redis_server: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Point apps built in this test at the session's Redis and key prefix."""
    url, prefix = redis_server
    env = {
        "REDIS_URL": url,
        "CELERY_KEY_PREFIX": prefix,
        # Rate-limit counts of this test alone: one test's 401s never 429 another's.
        "RATELIMIT_KEY_PREFIX": f"{prefix}limits-{uuid.uuid4().hex[:8]}",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
{%- endif %}

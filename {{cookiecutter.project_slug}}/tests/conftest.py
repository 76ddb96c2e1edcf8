"""Fixtures: a fresh app from the factory for every test, and an isolated
database behind it.

SQLite by default: every test gets its own database file. When DATABASE_URL
points at PostgreSQL, the session creates its own database on that server,
migrates it, empties the tables after every test and drops it at the end.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text

from {{ cookiecutter.package_name }} import create_app, tracing
from {{ cookiecutter.package_name }}.config import Settings, normalize_database_url
from {{ cookiecutter.package_name }}.extensions import db

from support import ApiClient, CapturingTransport, Tenant
{%- if cookiecutter.use_celery == "y" %}

pytest_plugins = ["celery_support"]
{%- endif %}

# Variables a developer's shell may carry that would change what tests see:
# every setting's (config.py reads no other), and those read elsewhere. The
# session's fixtures read the services' addresses before they are cleared.
_APP_VARIABLES = (
    "APP_ENV",
    *Settings.model_fields,
    "PROMETHEUS_MULTIPROC_DIR",
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
def app_closers() -> list[Callable[[Flask], None]]:
    """What ``make_app`` calls on each app it built once the test ends; a
    feature whose app holds connections of its own adds its closer."""
    return []


@pytest.fixture
def make_app(
    database_url: str, app_closers: list[Callable[[Flask], None]]
) -> Iterator[Callable[..., Flask]]:
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
        for close in app_closers:
            close(app)
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

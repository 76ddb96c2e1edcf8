"""Every request gives back what it took: session, connection, resources.

The pool's checked-out count is read after each request. It must be zero
whether the view returned, raised, or aborted; a negative control shows the
count does see a leaked connection.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable

import pytest
from flask import Flask, abort
from flask.testing import FlaskClient
from sqlalchemy import func, select, text

from {{ cookiecutter.package_name }}.events.models import Event
from {{ cookiecutter.package_name }}.extensions import db
from {{ cookiecutter.package_name }}.http.resources import hold

from support import checked_out

opened_files: list = []
leaked: list = []


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    app = make_app()

    def touch_database() -> None:
        db.session.execute(select(func.count()).select_from(Event)).scalar_one()
        # Closed by teardown, which is what this test checks.
        opened_files.append(hold(tempfile.TemporaryFile()))  # noqa: SIM115

    @app.get("/ok")
    def ok() -> dict:
        touch_database()
        return {"ok": True}

    @app.get("/raises")
    def raises() -> dict:
        touch_database()
        raise RuntimeError("view failed")

    @app.get("/aborts")
    def aborts() -> dict:
        touch_database()
        abort(403)

    @app.get("/leaks")
    def leaks() -> dict:
        # A connection taken outside the session and never closed.
        connection = db.engine.connect()
        connection.execute(text("SELECT 1"))
        leaked.append(connection)
        return {"leaked": True}

    return app


@pytest.mark.parametrize(
    ("path", "status"), [("/ok", 200), ("/raises", 500), ("/aborts", 403)]
)
def test_request_returns_its_connection_and_closes_its_resources(
    app: Flask, client: FlaskClient, path: str, status: int
) -> None:
    opened_files.clear()
    for _ in range(3):
        assert client.get(path).status_code == status
        assert checked_out(app) == 0
    assert len(opened_files) == 3
    assert all(f.closed for f in opened_files)


def test_session_is_removed_at_teardown(app: Flask) -> None:
    sessions = []

    @app.get("/session")
    def session_identity() -> dict:
        sessions.append(db.session())
        db.session.execute(text("SELECT 1"))
        return {}

    client = app.test_client()
    client.get("/session")
    client.get("/session")
    assert sessions[0] is not sessions[1]
    assert all(not s.in_transaction() for s in sessions)


def test_the_pool_count_sees_a_leak(app: Flask, client: FlaskClient) -> None:
    leaked.clear()
    client.get("/leaks")
    assert checked_out(app) == 1
    leaked.pop().close()
    assert checked_out(app) == 0

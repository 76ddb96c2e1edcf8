"""SQLite waits a bounded time for another writer's lock, then answers 503;
a database error that is a bug stays a 500.

Every project can run on SQLite (development, tests, small deployments),
where "the database is away" means a lock another process holds.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import text

from {{ cookiecutter.package_name }}.extensions import db

from support import problem_of

EVENT = {"kind": "signup", "amount": "1.00"}


def test_a_locked_sqlite_database_gives_503_then_works_again(
    make_app: Callable[..., Flask],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("DATABASE_BUSY_TIMEOUT", "1")
    path = tmp_path / "busy.db"
    app = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{path}")
    client = app.test_client()
    assert client.get("/api/events").status_code == 200  # the token is issued

    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # no one else reads or writes
    try:
        with caplog.at_level(logging.INFO):
            started = time.monotonic()
            responses = [client.post("/api/events", json=EVENT) for _ in range(2)]
            took = time.monotonic() - started
    finally:
        holder.rollback()
        holder.close()

    for response in responses:
        assert response.status_code == 503, response.data
        assert problem_of(response)["detail"].startswith("The database is unavailable")
        assert response.headers["Retry-After"].isdigit()
    assert took < 2 * 1 + 5  # the busy timeout per request, with slack
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "database is locked" in errors[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)

    assert client.post("/api/events", json=EVENT).status_code == 201


def test_a_query_that_is_wrong_is_a_500_with_its_traceback(
    make_app: Callable[..., Flask], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite reports a missing table as an operational error too: still
    a bug to report, not an outage to ride out."""
    app = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'bug.db'}")

    def broken() -> dict[str, str]:
        db.session.execute(text("SELECT * FROM no_such_table"))
        return {}

    app.add_url_rule("/api/test-broken", view_func=broken)
    with caplog.at_level(logging.INFO):
        response = app.test_client(token=None).get("/api/test-broken")
    assert response.status_code == 500
    assert "Retry-After" not in response.headers
    assert "no_such_table" not in response.get_data(as_text=True)
    assert any(r.exc_info for r in caplog.records if r.levelno >= logging.ERROR)

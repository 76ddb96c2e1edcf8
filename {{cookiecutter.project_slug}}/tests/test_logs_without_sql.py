"""No log line and no Sentry event carries a SQL statement or its parameters."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text
from sqlalchemy.exc import StatementError

from {{ cookiecutter.package_name }}.extensions import db
from {{ cookiecutter.package_name }}.logs import make_formatter

from support import CapturingTransport

SECRET = "hunter2-parameter"  # noqa: S105 - a value to look for, not a secret
# Put together at run time: the traceback of Python 3.13 quotes the test's own
# source lines, which must not count as the statement showing through.
STATEMENT = " ".join(["SELECT no_such_column", "FROM accounts WHERE name = :name"])


def failed_statement(app: Flask) -> StatementError:
    """A real error from the app's database, with a bound parameter."""
    with app.app_context():
        try:
            db.session.execute(text(STATEMENT), {"name": SECRET})
        except StatementError as error:
            db.session.rollback()
            return error
    raise AssertionError("the statement did not fail")


def record_of(error: StatementError, message: str, *args: Any) -> logging.LogRecord:
    try:
        raise RuntimeError("while exporting") from error
    except RuntimeError:
        # The app's factory: records carry the request id the formats name.
        return logging.getLogRecordFactory()(
            "probe", logging.ERROR, __file__, 1, message, args, sys.exc_info()
        )


@pytest.mark.parametrize("json_lines", [False, True])
@pytest.mark.parametrize("message", ["query failed: %s", "query failed: %r"])
def test_tracebacks_and_messages_lose_the_statement(
    make_app: Callable[..., Flask], json_lines: bool, message: str
) -> None:
    error = failed_statement(make_app())
    assert "no_such_column" in str(error)
    assert SECRET in str(error)
    line = make_formatter(json_lines).format(record_of(error, message, error))
    assert "no_such_column FROM accounts" not in line
    assert SECRET not in line
    assert "[SQL:" not in line
    assert "query failed" in line
    assert "while exporting" in line  # the traceback is still there
    if json_lines:
        assert json.loads(line)["message"].startswith("query failed")


def test_named_arguments_lose_the_statement(make_app: Callable[..., Flask]) -> None:
    """As a task runner logs a failed task: ``%(exc)s`` from a mapping."""
    error = failed_statement(make_app())
    line = make_formatter(False).format(
        record_of(error, "Task %(name)s raised: %(exc)s", {"name": "t", "exc": error})
    )
    assert "Task t raised" in line
    assert SECRET not in line
    assert "[SQL:" not in line


def test_sentry_events_lose_the_statement(
    make_app: Callable[..., Flask], sentry_transport: CapturingTransport
) -> None:
    app = make_app(
        SENTRY_DSN="https://public@sentry.example.invalid/1",
        SENTRY_TRANSPORT=sentry_transport,
    )

    @app.get("/bad-query")
    def bad_query() -> str:
        db.session.execute(text(STATEMENT), {"name": SECRET})
        return "unreachable"

    response = app.test_client().get("/bad-query")
    assert response.status_code == 500
    [event] = sentry_transport.events()
    values = [exception["value"] for exception in event["exception"]["values"]]
    assert any("no_such_column" in value for value in values)  # the driver's words
    assert not any("[SQL:" in value for value in values)
    assert not any(SECRET in value for value in values)

"""A database that is away or frozen costs a request a bounded wait and a 503.

Every wait on the database path has a bound: for a pooled connection
(``DATABASE_POOL_TIMEOUT``), to connect (``DATABASE_CONNECT_TIMEOUT``), for
a statement (``DATABASE_STATEMENT_TIMEOUT``), for any answer at all
(``DATABASE_ANSWER_TIMEOUT``{% if cookiecutter.database == "postgresql" %}, see ``postgres.py``{% endif %}) and, on SQLite, for
another writer's lock (``DATABASE_BUSY_TIMEOUT``); config.py turns them into
engine options. :func:`answer_within` shortens them for one block, as the
readiness check does; :func:`unhurried` lifts them for work that is long
on purpose.

When one of them runs out, or the server refuses the connection, the request
gets a 503 problem with ``Retry-After``, and the failure goes to the app's
``Outage("database")``: one ERROR line (and so one Sentry event) per burst,
with the request id, never the SQL; no traceback per request. Errors that
are bugs (a missing table, bad SQL) stay 500s with their traceback. The
burst ends with the first statement that completes: proof that the
database answers again, at the cost of an integer test per statement.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from flask import Flask, current_app
from flask.wrappers import Response
from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeout

from .config import ANSWER_TIMEOUT
from .extensions import db
from .http.problems import problem
from .outages import Outage

OUTAGE = "database_outage"
RETRY_AFTER_SECONDS = 5
# SQLite errors of a database that cannot be used right now, as opposed to
# bugs such as a missing table, which SQLite reports as operational too.
SQLITE_UNAVAILABLE = (
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_IOERR",
    "SQLITE_FULL",
    "SQLITE_CANTOPEN",
    "SQLITE_PROTOCOL",
)

_deadline: ContextVar[float] = ContextVar("database_deadline", default=math.inf)


@contextmanager
def answer_within(seconds: float) -> Iterator[None]:
    """End every database wait of the block, connecting included, within
    ``seconds`` from now (on PostgreSQL; SQLite has no such wait)."""
    token = _deadline.set(min(_deadline.get(), time.monotonic() + seconds))
    try:
        yield
    finally:
        _deadline.reset(token)


def time_left(limit: float | None) -> float | None:
    """How long a wait may take: ``limit`` seconds (None or 0: no limit),
    cut to the end of the current :func:`answer_within` block."""
    left = _deadline.get() - time.monotonic()
    if limit:
        left = min(left, limit)
    return None if left == math.inf else max(left, 0.0)


@contextmanager
def unhurried(connection: Connection) -> Iterator[None]:
    """Neither statement nor answer timeout on ``connection`` in the block:
    for work that is long on purpose (exports, migrations). TCP keepalives
    still end it if the server's host goes away. Call it in a transaction:
    the statement timeout comes back when that ends."""
    if connection.dialect.name != "postgresql":
        yield
        return
    connection.execute(text("SELECT set_config('statement_timeout', '0', true)"))
    driver = connection.connection.driver_connection
    saved = getattr(driver, ANSWER_TIMEOUT, None)
    setattr(driver, ANSWER_TIMEOUT, None)
    try:
        yield
    finally:
        setattr(driver, ANSWER_TIMEOUT, saved)


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` says the database cannot answer now (refused, gone,
    frozen, too slow, locked), rather than that the query is wrong."""
    if isinstance(error, PoolTimeout | DisconnectionError):
        return True
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    if not isinstance(error, OperationalError):
        return False
    driver_error = error.orig
    if isinstance(driver_error, sqlite3.Error):
        name = getattr(driver_error, "sqlite_errorname", "")
        return name.startswith(SQLITE_UNAVAILABLE)
    return True


def outage() -> Outage:
    """This app's record of database outages."""
    found: Outage = current_app.extensions[OUTAGE]
    return found


def unavailable(error: BaseException) -> Response:
    """Record ``error`` in the outage; the 503 the client gets for it."""
    outage().failed(error)
    response = problem(
        503,
        "Service Unavailable",
        "The database is unavailable. Retry after the time in Retry-After.",
    )
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def handle_database_error(error: SQLAlchemyError) -> Response:
    if not is_unavailable(error):
        raise error  # a bug: the 500 handler logs it with its traceback
    return unavailable(error)


def init_app(app: Flask) -> None:
    found = Outage("database")
    app.extensions[OUTAGE] = found
    with app.app_context():
        engine: Engine = db.engine
    app.register_error_handler(SQLAlchemyError, handle_database_error)

    @event.listens_for(engine, "after_cursor_execute")
    def answered(*_args: Any) -> None:
        found.answered()

{%- if cookiecutter.database == "postgresql" %}

    if engine.dialect.name == "postgresql":
        from .postgres import bound_connections

        connect_args = app.config.get("SQLALCHEMY_ENGINE_OPTIONS", {}).get(
            "connect_args", {}
        )
        bound_connections(engine, connect_args.get("connect_timeout", 3))
{%- endif %}

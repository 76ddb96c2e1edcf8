"""PostgreSQL connections that give up on a server that does not answer.

The server's ``statement_timeout`` ends a slow statement, and TCP keepalives
and ``tcp_user_timeout`` end a connection to a host that is gone. Neither
helps when the server's host is up but the server is not answering: frozen,
stopped by a debugger, paused with its container, or swapping. The kernel
still acknowledges every packet, so the client would wait forever. Here
psycopg's wait for each answer is bounded too: the connection's
``answer_timeout`` (``DATABASE_ANSWER_TIMEOUT``), or less inside
:func:`database.answer_within`. A connection that ran out of time is closed
(its state is unknown), so SQLAlchemy drops it from the pool and the next
checkout connects afresh.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar

import psycopg
from psycopg.abc import PQGen
from psycopg.connection import _WAIT_INTERVAL
from psycopg.errors import _WaitTimeout
from sqlalchemy import Engine, event

from .config import ANSWER_TIMEOUT
from .database import answer_within, time_left

RV = TypeVar("RV")
# libpq's shortest connect timeout: a smaller one is raised to it.
MIN_CONNECT_TIMEOUT = 2


class AnswerTimeout(psycopg.OperationalError):
    """The server did not answer in time; the connection was closed."""


class BoundedConnection(psycopg.Connection[Any]):
    """A psycopg connection whose every wait for the server is bounded."""

    answer_timeout: float | None = None

    def wait(
        self,
        gen: PQGen[RV],
        interval: float = _WAIT_INTERVAL,
        timeout: float | None = None,
    ) -> RV:
        limit = time_left(self.answer_timeout) if timeout is None else timeout
        try:
            return super().wait(gen, interval, limit)
        except _WaitTimeout:
            self.close()
            raise AnswerTimeout(
                f"no answer from the server within {limit:.3g} s; connection closed"
            ) from None


def bound_connections(engine: Engine, ping_timeout: float) -> None:
    """Make ``engine`` open :class:`BoundedConnection` connections, with
    the connect timeout cut to what is left of an ``answer_within`` block,
    and give the pool's ping of a connection ``ping_timeout`` seconds: a
    frozen server is found out on checkout, in the time a connect would
    take, rather than after the longer answer timeout meant for queries."""
    ping = engine.dialect.do_ping

    def bounded_ping(dbapi_connection: Any) -> bool:
        with answer_within(ping_timeout):
            return ping(dbapi_connection)

    engine.dialect.do_ping = bounded_ping  # type: ignore[method-assign]

    @event.listens_for(engine, "do_connect")
    def connect(
        _dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any]
    ) -> BoundedConnection:
        params = dict(cparams)  # the engine's own dict is reused for every connect
        answer_timeout = params.pop(ANSWER_TIMEOUT, None)
        left = time_left(None)
        if left is not None:
            if left <= 0:
                raise psycopg.errors.ConnectionTimeout("no time left to connect")
            configured = float(params.get("connect_timeout") or math.inf)
            params["connect_timeout"] = max(
                MIN_CONNECT_TIMEOUT, math.ceil(min(configured, left))
            )
        connection = BoundedConnection.connect(*cargs, **params)
        connection.answer_timeout = answer_timeout or None
        return connection

"""``/healthz`` says the process answers; ``/readyz`` says it can do work.

Liveness does no I/O, so a slow database never gets healthy workers killed.
Readiness checks the database within ``READINESS_TIMEOUT_SECONDS``, however
the database fails (refused, frozen, slow), so a load balancer stops sending
traffic while it is unreachable and sends it again once it answers.
"""

from __future__ import annotations

from flask import Blueprint, current_app
from flask.typing import ResponseReturnValue
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ..database import answer_within, outage
from ..extensions import db
from ..http.problems import problem

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def check_database(timeout_seconds: int) -> None:
    """Run ``SELECT 1``; on PostgreSQL every wait, for a connection or for
    the server's answer, ends within ``timeout_seconds``."""
    with answer_within(timeout_seconds), db.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(
                text("SELECT set_config('statement_timeout', :ms, true)"),
                {"ms": str(timeout_seconds * 1000)},
            )
        connection.execute(text("SELECT 1"))


@bp.get("/readyz")
def readyz() -> ResponseReturnValue:
    try:
        check_database(current_app.config["READINESS_TIMEOUT_SECONDS"])
    except SQLAlchemyError as exc:
        # Counted with the requests' failures: one log line per outage,
        # however often the load balancer asks.
        outage().failed(exc)
        return problem(
            503,
            "Service Unavailable",
            "database unreachable",
            checks={"database": "unreachable"},
        )
    return {"status": "ready", "checks": {"database": "ok"}}

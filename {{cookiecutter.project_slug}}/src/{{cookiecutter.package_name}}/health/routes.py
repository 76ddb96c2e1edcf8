"""``/healthz`` says the process answers; ``/readyz`` says it can do work.

Liveness does no I/O, so a slow database never gets healthy workers killed.
Readiness checks the database with a short timeout, so a load balancer stops
sending traffic while it is unreachable.
"""

from __future__ import annotations

import logging

from flask import Blueprint, current_app
from flask.typing import ResponseReturnValue
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from ..extensions import db
from ..http.problems import problem

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@bp.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def check_database(timeout_seconds: int) -> None:
    """Run ``SELECT 1``, bounded by ``timeout_seconds`` on PostgreSQL."""
    with db.engine.connect() as connection:
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
        log.warning("readiness check failed: %s", type(exc).__name__)
        return problem(
            503,
            "Service Unavailable",
            "database unreachable",
            checks={"database": "unreachable"},
        )
    return {"status": "ready", "checks": {"database": "ok"}}

"""Liveness never touches the database; readiness does, briefly."""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path

import pytest
from flask import Flask

from support import checked_out, problem_of


def test_healthz_answers_without_the_database(
    make_app: Callable[..., Flask], tmp_path: Path
) -> None:
    broken = make_app(
        schema=False, SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/missing/x.db"
    )
    # Probes send no token: health routes need none, and issuing one would
    # touch the database.
    response = broken.test_client(token=None).get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_checks_the_database(app: Flask) -> None:
    response = app.test_client(token=None).get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["checks"] == {"database": "ok"}
    assert checked_out(app) == 0


UNREACHABLE = {"sqlite-missing-file": "sqlite:///{tmp}/missing/x.db"}
if find_spec("psycopg"):  # projects generated for PostgreSQL
    UNREACHABLE["postgresql-refused"] = "postgresql://postgres@127.0.0.1:1/nothing"


@pytest.mark.parametrize("unreachable", UNREACHABLE.values(), ids=UNREACHABLE.keys())
def test_readyz_is_503_quickly_when_the_database_is_down(
    make_app: Callable[..., Flask], tmp_path: Path, unreachable: str
) -> None:
    app = make_app(
        schema=False, SQLALCHEMY_DATABASE_URI=unreachable.format(tmp=tmp_path)
    )
    started = time.monotonic()
    response = app.test_client(token=None).get("/readyz")
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    problem = problem_of(response)
    assert problem["detail"] == "database unreachable"
    assert problem["checks"] == {"database": "unreachable"}
    assert elapsed < 5

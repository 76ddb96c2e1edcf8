"""A Celery worker running hundreds of tasks leaves memory where it was.

Measured inside the worker's pool process, where tasks run: the test-only
``memory_probe`` module (``--include``) traces its allocations from its
start and answers two tasks of its own. After a warm-up batch, a snapshot;
then a few hundred real jobs (owner summaries and exports); then the
growth since the snapshot, which must stay below ``BOUND_BYTES``. Measured
growth is 45-60 KB on SQLite and PostgreSQL (17 KB of it, on Python 3.12.0
to 3.12.6 only, pathlib's immortal export file names: see the README); a
task whose result stays in a module-level dict leaves about 200 KB.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from {{ cookiecutter.package_name }}.extensions import db
from {{ cookiecutter.package_name }}.jobs.models import FINISHED, Job

from celery_support import celery_process
from memory_check import Growth, assert_growth_below
from support import wait_for

WARM_UP_JOBS = 60
JOBS = 300
BOUND_BYTES = 128 * 1024


def worker_process(env: dict[str, str], log_path: Path) -> Any:
    """One prefork pool process, as production runs it, with the probe."""
    arguments = [
        "worker",
        "--pool=prefork",
        "--concurrency=1",
        "--loglevel=WARNING",
        "--include=memory_probe",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        f"--hostname=memory-{uuid.uuid4().hex[:8]}@%h",
    ]
    return celery_process(arguments, env, log_path, ready=" ready.")


def finished_jobs(app: Flask) -> int:
    with app.app_context():
        count = db.session.scalar(
            select(func.count()).select_from(Job).where(Job.status.in_(FINISHED))
        )
        db.session.remove()
        return count or 0


def run_jobs(app: Flask, client: FlaskClient, count: int) -> None:
    """``count`` real jobs, two summaries to one export, run to the end."""
    done = finished_jobs(app)
    for n in range(count):
        if n % 3 == 2:
            response = client.post("/api/exports", json={"format": "csv"})
        else:
            response = client.post("/api/jobs/owner-summaries")
        assert response.status_code == 202, response.data
    wait_for(
        lambda: finished_jobs(app) == done + count,
        timeout=300,
        what=f"{count} jobs to finish",
    )


def probe(app: Flask, name: str) -> Any:
    return app.extensions["celery"].send_task(name).get(timeout=60)


def growth_in_worker(
    make_app: Callable[..., Flask],
    env: dict[str, str],
    log_path: Path,
) -> tuple[Growth, dict[str, Any]]:
    app = make_app(RATELIMIT_ENABLED=False)
    client = app.test_client()
    for amount in ("5.00", "7.25", "1.10"):
        client.post("/api/events", json={"kind": "sale", "amount": amount})
    with worker_process(env, log_path):
        run_jobs(app, client, WARM_UP_JOBS)
        pid = probe(app, "test.memory_mark")
        run_jobs(app, client, JOBS)
        report = probe(app, "test.memory_growth")
    assert report["pid"] == pid, "the pool process was replaced mid-measure"
    growth = Growth(bytes=report["bytes"], top_sites=tuple(report["top_sites"]))
    return growth, report


def test_a_worker_running_hundreds_of_jobs_leaves_memory_where_it_was(
    make_app: Callable[..., Flask],
    celery_env: dict[str, str],
    database_url: str,
    tmp_path: Path,
) -> None:
    env = {**celery_env, "DATABASE_URL": database_url}
    growth, report = growth_in_worker(make_app, env, tmp_path / "worker.log")
    print(f"{JOBS} jobs: {growth.bytes} bytes\n{growth.report()}")
    assert report["leaked"] == 0
    assert_growth_below(growth, BOUND_BYTES, f"a worker running {JOBS} jobs")


def test_the_check_catches_a_worker_leaking_per_task(
    make_app: Callable[..., Flask],
    celery_env: dict[str, str],
    database_url: str,
    tmp_path: Path,
) -> None:
    env = {**celery_env, "DATABASE_URL": database_url, "MEMORY_PROBE_LEAK": "1"}
    growth, report = growth_in_worker(make_app, env, tmp_path / "worker.log")
    print(f"{JOBS} jobs, leaking: {growth.bytes} bytes\n{growth.report()}")
    assert report["leaked"] >= JOBS
    with pytest.raises(AssertionError, match="top allocation sites by line"):
        assert_growth_below(growth, BOUND_BYTES, f"a worker running {JOBS} jobs")

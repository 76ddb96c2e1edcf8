"""What a failed or large job shows its owner, and what a killed export
leaves behind.

A failed job shows a stable code and a short message; the exception (an
SQL statement and its parameters) goes to the log and Sentry only. The
owner summary adds up totals of any size, exactly, on either database. The
purge task removes temporary export files no running export can own.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker
from flask import Flask
from sqlalchemy import insert, text

from {{ cookiecutter.package_name }} import logs
from {{ cookiecutter.package_name }}.events.models import Event
from {{ cookiecutter.package_name }}.extensions import db
from {{ cookiecutter.package_name }}.jobs import services
from {{ cookiecutter.package_name }}.jobs.tasks import JobTask

from celery_support import finished_job
from support import account_id, wait_for

LARGEST_AMOUNT = "9999999999.99"


@pytest.fixture
def worker_app(
    make_app: Callable[..., Flask], celery_env: dict[str, str]
) -> Iterator[Flask]:
    app = make_app()
    celery = app.extensions["celery"]

    @celery.task(base=JobTask, name="test.database_error", shared=False)
    def database_error(job_id: str, owner_id: int) -> None:
        """Fails the way a constraint violation does: with the statement
        and its parameters in the exception's text."""
        services.start(job_id, owner_id)
        db.session.execute(
            text("INSERT INTO accounts (name, created_at) VALUES (:name, :at)"),
            {"name": "tester", "at": "2026-01-01 00:00:00"},
        )

    with start_worker(celery, pool="solo", perform_ping_check=False):
        yield app


def test_a_database_error_shows_a_code_and_logs_the_details(
    worker_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    owner_id = account_id(worker_app)  # the account "tester"
    task = worker_app.extensions["celery"].tasks["test.database_error"]
    token = logs.request_id_var.set("req-db-error-1")
    try:
        with worker_app.app_context():
            job_id = str(services.submit_job(owner_id, "test", {}, task).id)
            db.session.remove()
    finally:
        logs.request_id_var.reset(token)
    client = worker_app.test_client()
    url = f"/api/jobs/{job_id}"
    done = wait_for(lambda: finished_job(client, url), what="the failure")

    assert done["status"] == "failed"
    assert done["error"] == {
        "code": "internal_error",
        "message": "The job failed because of an internal error.",
    }
    shown = client.get(url).get_data(as_text=True)
    for leak in ("INSERT", "SQL", "accounts", "IntegrityError"):
        assert leak not in shown
    [record] = [
        r
        for r in caplog.records
        if r.name.endswith("jobs.tasks") and job_id in r.getMessage()
    ]
    assert record.request_id == "req-db-error-1"
    assert record.levelno == logging.WARNING
    assert "internal_error" in record.getMessage()
    # The driver's own words, which name the constraint; not the statement.
    assert "unique constraint" in record.getMessage().lower()
    assert "INSERT" not in record.getMessage()


def test_the_owner_summary_adds_up_any_total_exactly(worker_app: Flask) -> None:
    """A thousand of the largest amounts: far past what an amount column
    holds (PostgreSQL refused the summary), and past what floating point
    adds up to the cent (SQLite's SUM was 0.18 off)."""
    owner_id = account_id(worker_app)
    with worker_app.app_context():
        rows = [
            {"owner_id": owner_id, "kind": "sale", "amount": LARGEST_AMOUNT}
            for _ in range(1000)
        ]
        rows += [{"owner_id": owner_id, "kind": "sale", "amount": "0.01"}] * 7
        db.session.execute(insert(Event), rows)
        db.session.commit()
        db.session.remove()
    client = worker_app.test_client()
    accepted = client.post("/api/jobs/owner-summaries")
    assert accepted.status_code == 202
    done = wait_for(
        lambda: finished_job(client, accepted.get_json()["status_url"]), what="summary"
    )

    assert done["status"] == "succeeded", done
    assert done["result"]["events"] == 1007
    assert done["result"]["total"] == "9999999999990.07"
    summary = client.get(f"/api/events/{done['result']['summary_event_id']}")
    assert json.loads(summary.get_json()["payload"])["total"] == "9999999999990.07"
    assert summary.get_json()["amount"] == "0.00"


def temporary_file(directory: Path, age_seconds: float, fmt: str = "csv") -> Path:
    """A file named as ``files.write_atomically`` names its temporary files,
    last written ``age_seconds`` ago."""
    path = directory / f".{uuid.uuid4()}.{fmt}.k3x9q_2a.tmp"
    path.write_bytes(b"id,kind\n")
    written = time.time() - age_seconds
    os.utime(path, (written, written))
    return path


def test_purge_removes_temporary_files_of_killed_exports_only(
    make_app: Callable[..., Flask], celery_env: dict[str, str], tmp_path: Path
) -> None:
    directory = tmp_path / "exports"
    directory.mkdir()
    app = make_app(EXPORT_DIR=str(directory))
    hard_limit = app.extensions["celery"].conf.task_time_limit
    stale = [
        temporary_file(directory, 3 * hard_limit),
        temporary_file(directory, 3 * hard_limit, "ndjson"),
    ]
    # Could belong to an export still running, within its time limit.
    fresh = temporary_file(directory, hard_limit / 2)
    # Not a name of ours, or not temporary: never touched.
    foreign = directory / ".backup.tmp"
    foreign.write_bytes(b"")
    os.utime(foreign, (0, 0))
    finished_export = directory / f"{uuid.uuid4()}.csv"
    finished_export.write_bytes(b"")
    os.utime(finished_export, (0, 0))

    with app.app_context():
        app.extensions["celery"].tasks["exports.purge_expired"]()

    assert not any(path.exists() for path in stale)
    assert fresh.exists()
    assert foreign.exists()
    assert finished_export.exists()

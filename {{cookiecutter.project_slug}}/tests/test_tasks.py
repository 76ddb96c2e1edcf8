"""Celery tasks on a real Redis broker, run by a real (in-process) worker.

No eager mode: messages go through Redis and back, so serialization, acks,
retries and the app context are the ones production gets.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from flask import Flask, current_app, request
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.background import NotPlainValueError
from {{ cookiecutter.package_name }}.celery_app import AppTask, enqueue
from {{ cookiecutter.package_name }}.config import ConfigError
from {{ cookiecutter.package_name }}.exports import routes as export_routes
from {{ cookiecutter.package_name }}.exports import tasks as export_tasks
from {{ cookiecutter.package_name }}.extensions import db
from {{ cookiecutter.package_name }}.jobs import tasks
from {{ cookiecutter.package_name }}.jobs.models import Job, JobStatus
from {{ cookiecutter.package_name }}.sqltypes import utcnow

from celery_support import finished_job
from support import account_id, checked_out, issue_token, problem_of, wait_for

GENERATED_ID = re.compile(r"^[0-9a-f]{32}$")
probe_sessions: list[Any] = []
flaky_calls: list[int] = []
result_store_closed = threading.Event()


def register_test_tasks(celery: Celery) -> None:
    """Tasks that exist only in this test's worker."""

    @celery.task(name="test.session_probe", shared=False)
    def session_probe(fail: bool) -> str:
        db.session.execute(text("SELECT 1"))
        probe_sessions.append(db.session())
        if fail:
            raise ValueError("probe failed on purpose")
        return current_app.config["APP_ENV"]

    @celery.task(name="test.close_result_store", shared=False, ignore_result=True)
    def close_result_store() -> None:
        """Celery keeps one result-store client per thread: close the worker
        thread's own before the worker stops, so no socket outlives it."""
        celery.backend.client.connection_pool.disconnect()
        result_store_closed.set()

    @celery.task(name="test.flaky", shared=False)
    def flaky(failures: int) -> str:
        flaky_calls.append(1)
        if len(flaky_calls) <= failures:
            raise OperationalError("SELECT 1", {}, Exception("connection reset"))
        return "ok"


@pytest.fixture
def worker_app(
    make_app: Callable[..., Flask], celery_env: dict[str, str]
) -> Iterator[Flask]:
    """An app whose Celery is served by a worker thread in this process."""
    app = make_app()
    celery = app.extensions["celery"]
    register_test_tasks(celery)
    probe_sessions.clear()
    flaky_calls.clear()
    result_store_closed.clear()
    with start_worker(celery, pool="solo", perform_ping_check=False, loglevel="INFO"):
        yield app
        celery.tasks["test.close_result_store"].delay()
        assert result_store_closed.wait(timeout=30)


def add_events(client: Any, amounts: list[str], kind: str = "sale") -> None:
    """Events of the client's account."""
    for amount in amounts:
        created = client.post("/api/events", json={"kind": kind, "amount": amount})
        assert created.status_code == 201


def other_account_client(app: Flask) -> Any:
    return app.test_client(token=issue_token(app, "other"))


def test_enqueued_job_runs_and_reports_success(worker_app: Flask) -> None:
    client = worker_app.test_client()
    add_events(client, ["10.10", "20.20", "0.01"])
    # Another account's events are not the caller's to add up.
    add_events(other_account_client(worker_app), ["99.99"])
    response = client.post("/api/jobs/owner-summaries")
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "pending"
    assert response.headers["Location"] == body["status_url"]

    done = wait_for(lambda: finished_job(client, body["status_url"]), what="the job")
    assert done["status"] == "succeeded"
    assert done["attempts"] == 1
    assert done["result"]["owner_id"] == account_id(worker_app)
    assert done["result"]["events"] == 3
    assert done["result"]["total"] == "30.31"
    summary = client.get(f"/api/events/{done['result']['summary_event_id']}")
    assert json.loads(summary.get_json()["payload"])["total"] == "30.31"
    assert checked_out(worker_app) == 0


def test_a_failing_job_is_reported_failed(worker_app: Flask) -> None:
    owner_id, other_id = account_id(worker_app), account_id(worker_app, "other")
    with worker_app.app_context():
        job = Job(
            owner_id=owner_id,
            kind="owner_summary",
            params={},
            status=JobStatus.PENDING,
        )
        db.session.add(job)
        db.session.commit()
        job_id = str(job.id)
        # A message naming another account than the job's: the task finds
        # no job of that account to run, and raises.
        enqueue(tasks.summarize_owner, job_id, other_id, task_id=job_id)
    client = worker_app.test_client()
    done = wait_for(lambda: finished_job(client, f"/api/jobs/{job_id}"), what="failure")
    assert done["status"] == "failed"
    assert done["error"] == {
        "code": "internal_error",
        "message": "The job failed because of an internal error.",
    }
    assert checked_out(worker_app) == 0


def test_periodic_purge_reads_config_and_deletes_expired_jobs(
    worker_app: Flask,
) -> None:
    retention = worker_app.config["JOB_RETENTION_DAYS"]
    owner_id = account_id(worker_app)
    with worker_app.app_context():
        now = utcnow()
        old = Job(
            owner_id=owner_id,
            kind="k",
            params={},
            status="succeeded",
            finished_at=now - timedelta(days=retention + 1),
        )
        recent = Job(
            owner_id=owner_id, kind="k", params={}, status="succeeded", finished_at=now
        )
        running = Job(owner_id=owner_id, kind="k", params={}, status="running")
        db.session.add_all([old, recent, running])
        db.session.commit()
        kept = {recent.id, running.id}
        deleted = enqueue(tasks.purge_expired).get(timeout=30)
        remaining = set(db.session.scalars(select(Job.id)))
        db.session.remove()
    assert deleted == 1
    assert remaining == kept
    assert "jobs.purge_expired" in {
        entry["task"]
        for entry in worker_app.extensions["celery"].conf.beat_schedule.values()
    }


@pytest.mark.parametrize("fail", [False, True], ids=["success", "failure"])
def test_task_session_is_removed_after_it_ends(worker_app: Flask, fail: bool) -> None:
    celery = worker_app.extensions["celery"]
    with worker_app.app_context():
        result = celery.tasks["test.session_probe"].delay(fail)
        if fail:
            with pytest.raises(ValueError, match="on purpose"):
                result.get(timeout=30)
        else:
            assert result.get(timeout=30) == "testing"
    assert len(probe_sessions) == 1
    assert not probe_sessions[0].in_transaction()
    assert checked_out(worker_app) == 0


def test_transient_errors_are_retried_until_success(worker_app: Flask) -> None:
    celery = worker_app.extensions["celery"]
    flaky = celery.tasks["test.flaky"]
    assert OperationalError in flaky.autoretry_for
    assert flaky.retry_jitter is True
    with worker_app.app_context():
        assert flaky.delay(2).get(timeout=30) == "ok"
    assert len(flaky_calls) == 3
    assert checked_out(worker_app) == 0


def test_the_request_id_follows_the_task_into_its_logs(
    worker_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    client = worker_app.test_client()
    response = client.post(
        "/api/jobs/owner-summaries",
        json={},
        headers={"X-Request-ID": "req-to-task-1"},
    )
    wait_for(lambda: finished_job(client, response.get_json()["status_url"]))
    task_records = [r for r in caplog.records if r.name.endswith("jobs.tasks")]
    assert task_records
    assert {r.request_id for r in task_records} == {"req-to-task-1"}
    assert {r.account_id for r in task_records} == {str(account_id(worker_app))}


def test_tasks_sent_outside_a_request_get_their_own_id(
    worker_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with worker_app.app_context():
        enqueue(tasks.purge_expired).get(timeout=30)
        enqueue(tasks.purge_expired).get(timeout=30)
    ids = [r.request_id for r in caplog.records if r.name.endswith("jobs.tasks")]
    assert len(ids) == 2
    assert all(GENERATED_ID.match(i) for i in ids)
    assert ids[0] != ids[1]


def test_model_instances_and_proxies_are_refused_at_the_call_site(
    make_app: Callable[..., Flask], celery_env: dict[str, str]
) -> None:
    app = make_app()
    celery = app.extensions["celery"]
    task = celery.tasks[tasks.summarize_owner.name]
    job = Job(kind="k", params={})
    with pytest.raises(NotPlainValueError, match=r"Job model instance.*pass its id"):
        task.delay(job)
    with app.test_request_context("/"):
        with pytest.raises(NotPlainValueError, match="context-local proxy"):
            task.apply_async(args=[request])
        with pytest.raises(NotPlainValueError, match=r"argument 'ids'\[0\]"):
            task.apply_async(kwargs={"ids": [job]})


def test_broker_down_gives_503_quickly_and_marks_the_job_failed(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    app = make_app()
    client = app.test_client()
    started = time.monotonic()
    response = client.post("/api/jobs/owner-summaries")
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    assert elapsed < 2, f"enqueueing took {elapsed:.2f}s with the broker down"
    problem = problem_of(response)
    assert response.headers["Retry-After"]
    job = client.get(f"/api/jobs/{problem['job_id']}").get_json()
    assert job["status"] == "failed"
    assert job["error"]["code"] == "broker_unavailable"
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Job)) == 1
        db.session.remove()


def test_delivery_settings_are_hardened(
    make_app: Callable[..., Flask], celery_env: dict[str, str]
) -> None:
    app = make_app()
    conf = app.extensions["celery"].conf
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json"
    assert conf.accept_content == ["json"]
    assert conf.task_soft_time_limit < conf.task_time_limit
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
    assert conf.worker_hijack_root_logger is False
    assert {queue.name for queue in conf.task_queues} == {"default", "exports"}
    assert isinstance(app.extensions["celery"].tasks["jobs.purge_expired"], AppTask)


def test_tasks_declare_their_queue_and_schedule(
    make_app: Callable[..., Flask],
) -> None:
    """Each feature's tasks name their own queue and period; the Celery app
    collects them, knowing no feature."""
    celery = make_app().extensions["celery"]

    def queue_of(name: str) -> str:
        task = celery.tasks[name]
        options = celery.amqp.router.route(task._get_exec_options(), name)
        return str(options["queue"].name)

    assert queue_of("exports.write") == "exports"
    assert queue_of("exports.purge_expired") == "exports"
    assert queue_of("jobs.summarize_owner") == "default"
    assert {
        entry["task"]: entry["schedule"] for entry in celery.conf.beat_schedule.values()
    } == {
        "jobs.purge_expired": timedelta(hours=1),
        "jobs.reap_stuck": timedelta(minutes=5),
        "exports.purge_expired": timedelta(minutes=15),
    }


def test_visibility_timeout_must_outlast_the_hard_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CELERY_TASK_TIME_LIMIT", "600")
    monkeypatch.setenv("CELERY_VISIBILITY_TIMEOUT", "600")
    with pytest.raises(ConfigError, match="CELERY_VISIBILITY_TIMEOUT must exceed"):
        create_app({"APP_ENV": "testing"})


def test_production_refuses_to_start_without_a_broker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("SECRET_KEY", "s" * 40)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'p.db'}")
    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(ConfigError, match="REDIS_URL is not set"):
        create_app()


def test_unknown_job_is_a_json_404(client: Any) -> None:
    response = client.get(f"/api/jobs/{uuid.uuid4()}")
    assert response.status_code == 404
    problem_of(response)


def test_invalid_job_request_is_a_400(client: Any) -> None:
    # The summary is of the caller's events: a body cannot name an owner.
    response = client.post("/api/jobs/owner-summaries", json={"owner_id": 1})
    assert response.status_code == 400
    assert "owner_id" in problem_of(response)["errors"]


def run_export(app: Flask, body: dict[str, Any]) -> dict[str, Any]:
    client = app.test_client()
    response = client.post("/api/exports", json=body)
    assert response.status_code == 202, response.data
    status_url = response.get_json()["status_url"]
    return wait_for(lambda: finished_job(client, status_url), what="the export")


def download_url(app: Flask, export_id: str) -> str:
    """The signed link the status of a finished export carries."""
    status = app.test_client().get(f"/api/exports/{export_id}").get_json()
    assert status["status"] == "succeeded", status
    return status["download_url"]


def signed_download_url(app: Flask, job_id: uuid.UUID, owner_id: int) -> str:
    """A genuine link, signed as the status route signs them, for any job
    (the status route only hands them out for finished exports)."""
    with app.test_request_context():
        return export_routes.signed_download_url(Job(id=job_id, owner_id=owner_id))


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_background_export_matches_the_streamed_one(
    worker_app: Flask, fmt: str
) -> None:
    client = worker_app.test_client()
    add_events(client, ["1.00", "2.50", "3.75"])
    add_events(client, ["9.99"], kind="refund")
    add_events(other_account_client(worker_app), ["4.00"])
    done = run_export(worker_app, {"format": fmt, "filters": {"kind": "sale"}})
    assert done["status"] == "succeeded", done
    streamed = client.get(f"/api/events/export.{fmt}?kind=sale").data
    # The caller's three sales, nothing of the other account's (and a header).
    assert len(streamed.splitlines()) == 3 + (fmt == "csv")
    # The signed link is the credential: no bearer token is sent.
    anonymous = worker_app.test_client(token=None)
    with anonymous.get(download_url(worker_app, done["id"])) as download:
        assert download.status_code == 200
        assert download.data == streamed
    assert done["result"]["size"] == len(streamed)
    assert done["result"]["sha256"] == hashlib.sha256(streamed).hexdigest()
    assert "X-Sendfile" not in download.headers
    exported = Path(worker_app.config["EXPORT_DIR"]) / done["result"]["filename"]
    assert exported.read_bytes() == streamed
    assert exported.stat().st_mode & 0o777 == 0o644  # nginx reads it as another user
    assert not list(exported.parent.glob(".*.tmp")), "a temporary file was left"


def test_production_downloads_go_through_x_accel_redirect(worker_app: Flask) -> None:
    done = run_export(worker_app, {"format": "csv"})
    worker_app.config["EXPORT_X_ACCEL"] = True
    link = download_url(worker_app, done["id"])
    response = worker_app.test_client(token=None).get(link)
    assert response.status_code == 200
    assert response.headers["X-Accel-Redirect"] == f"/_exports/{done['id']}.csv"
    assert response.mimetype == "text/csv"
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert response.data == b""
    assert "X-Sendfile" not in response.headers


def test_download_refuses_unknown_unfinished_and_expired_exports(
    worker_app: Flask,
) -> None:
    client = worker_app.test_client()
    anonymous = worker_app.test_client(token=None)
    owner_id = account_id(worker_app)
    unknown = uuid.uuid4()
    assert anonymous.get(f"/api/exports/{unknown}/download").status_code == 403
    unknown_link = signed_download_url(worker_app, unknown, owner_id)
    assert anonymous.get(unknown_link).status_code == 404
    with worker_app.app_context():
        running = Job(
            owner_id=owner_id, kind="export", params={"format": "csv"}, status="running"
        )
        summary = Job(
            owner_id=owner_id, kind="owner_summary", params={}, status="succeeded"
        )
        db.session.add_all([running, summary])
        db.session.commit()
        running_id, summary_id = running.id, summary.id
        db.session.remove()
    conflict = anonymous.get(signed_download_url(worker_app, running_id, owner_id))
    assert conflict.status_code == 409
    assert "running" in problem_of(conflict)["detail"]
    # A job of another kind is not an export.
    assert client.get(f"/api/exports/{summary_id}").status_code == 404
    summary_link = signed_download_url(worker_app, summary_id, owner_id)
    assert anonymous.get(summary_link).status_code == 404

    done = run_export(worker_app, {"format": "ndjson"})
    link = download_url(worker_app, done["id"])
    worker_app.config["EXPORT_TTL_HOURS"] = 0
    with worker_app.app_context():
        purged = enqueue(export_tasks.purge_expired).get(timeout=30)
    assert purged >= 1
    assert anonymous.get(link).status_code == 404
    assert not (
        Path(worker_app.config["EXPORT_DIR"]) / done["result"]["filename"]
    ).exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"format": "xml"}, "format"),
        ({"format": "csv", "filters": {"since": "yesterday"}}, "filters.since"),
        ({"format": "csv", "path": "/etc/passwd"}, "path"),
        # Exports are of the caller's events: no owner to choose.
        ({"format": "csv", "filters": {"owner_id": 1}}, "filters.owner_id"),
    ],
)
def test_bad_export_requests_are_400(
    client: Any, body: dict[str, Any], field: str
) -> None:
    response = client.post("/api/exports", json=body)
    assert response.status_code == 400
    assert field in problem_of(response)["errors"]


def test_background_csv_export_neutralizes_formulas(worker_app: Flask) -> None:
    """The worker writes the same chunks as the streamed export, formula
    neutralization included."""
    client = worker_app.test_client()
    body = {"kind": "sale", "amount": "-1.00", "payload": "=1+2"}
    assert client.post("/api/events", json=body).status_code == 201
    done = run_export(worker_app, {"format": "csv"})
    assert done["status"] == "succeeded", done
    exported = Path(worker_app.config["EXPORT_DIR"]) / done["result"]["filename"]
    written = exported.read_bytes()
    assert written == client.get("/api/events/export.csv").data
    assert b",sale,-1.00,'=1+2," in written

"""Real ``celery worker`` processes, as production runs them.

A pool process killed with SIGKILL mid-task loses nothing: the message was
not acknowledged, the worker requeues it, a new pool process runs it, and
the job's effect lands exactly once. Without REDIS_URL the same worker runs
on local files, as ``make run`` uses it.
"""

from __future__ import annotations

import os
import shelve
import signal
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from {{ cookiecutter.package_name }}.events.models import Event
from {{ cookiecutter.package_name }}.extensions import db
from {{ cookiecutter.package_name }}.jobs.models import Job
from {{ cookiecutter.package_name }}.jobs.tasks import SUMMARY_KIND

from celery_support import celery_process, finished_job
from support import account_id, wait_for


def worker_process(env: dict[str, str], log_path: Path) -> Any:
    """A worker with one prefork pool process, as production runs it."""
    arguments = [
        "worker",
        "--pool=prefork",
        "--concurrency=1",
        "--loglevel=INFO",
        "--include=worker_gate,overrun_task",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        f"--hostname=test-{uuid.uuid4().hex[:8]}@%h",
    ]
    return celery_process(arguments, env, log_path, ready=" ready.")


def summaries_of(app: Flask, owner_id: int) -> int:
    with app.app_context():
        count = db.session.scalar(
            select(func.count())
            .select_from(Event)
            .where(Event.owner_id == owner_id, Event.kind == SUMMARY_KIND)
        )
        db.session.remove()
        return count


def start_summary(client: FlaskClient) -> str:
    """Two events of the client's account, and a summary job of them."""
    for amount in ("5.00", "7.25"):
        client.post("/api/events", json={"kind": "sale", "amount": amount})
    response = client.post("/api/jobs/owner-summaries")
    assert response.status_code == 202, response.data
    return response.get_json()["status_url"]


@pytest.mark.parametrize("phase", ["prerun", "postrun"])
def test_sigkilled_task_is_redelivered_and_applied_once(
    make_app: Callable[..., Flask],
    celery_env: dict[str, str],
    database_url: str,
    tmp_path: Path,
    phase: str,
) -> None:
    gate = tmp_path / "gate"
    gate.mkdir()
    app = make_app()
    env = {
        **celery_env,
        "DATABASE_URL": database_url,
        "WORKER_GATE_DIR": str(gate),
        "WORKER_GATE_PHASE": phase,
    }
    client = app.test_client()
    with worker_process(env, tmp_path / "worker.log") as worker:
        status_url = start_summary(client)
        reached = wait_for(lambda: list(gate.glob("reached-*")), what="the gate")
        child_pid = int(reached[0].name.removeprefix("reached-"))
        assert child_pid != worker.process.pid  # the pool process, not the parent
        os.kill(child_pid, signal.SIGKILL)

        job = wait_for(lambda: finished_job(client, status_url), timeout=60, what="job")
        if phase == "postrun":
            # The effect was committed before the kill; the redelivered
            # message must find the job done and change nothing.
            wait_for(lambda: "finished already" in worker.log(), what="redelivery")
        log = worker.log()

    assert "WorkerLostError" in log, log
    assert log.count("Task jobs.summarize_owner[") >= 2, "not delivered twice"
    assert log.count("] received") == 2, log
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 1
    assert job["result"]["total"] == "12.25"
    assert summaries_of(app, owner_id=account_id(app)) == 1


def test_a_job_killed_at_its_hard_time_limit_fails_as_timed_out(
    make_app: Callable[..., Flask],
    celery_env: dict[str, str],
    database_url: str,
    tmp_path: Path,
) -> None:
    """The pool process running it is killed, so the task's own failure
    handler never runs: the worker's main process runs it, and the pool
    process that replaces the killed one still gets a working database."""
    app = make_app()
    owner_id = account_id(app)
    with app.app_context():
        job = Job(owner_id=owner_id, kind="overrun", params={})
        db.session.add(job)
        db.session.commit()
        job_id = str(job.id)
        db.session.remove()
    env = {
        **celery_env,
        "DATABASE_URL": database_url,
        "CELERY_TASK_TIME_LIMIT": "3",
        "CELERY_TASK_SOFT_TIME_LIMIT": "1",
        "CELERY_VISIBILITY_TIMEOUT": "30",
    }
    client = app.test_client()
    with worker_process(env, tmp_path / "worker.log") as worker:
        app.extensions["celery"].send_task(
            "test.overrun", args=[job_id, owner_id], task_id=job_id
        )
        url = f"/api/jobs/{job_id}"
        killed = wait_for(lambda: finished_job(client, url), timeout=60, what="kill")
        next_url = start_summary(client)
        summary = wait_for(
            lambda: finished_job(client, next_url), timeout=60, what="the next job"
        )
        log = worker.log()

    assert "Hard time limit (3" in log, log
    assert killed["status"] == "failed"
    assert killed["error"]["code"] == "timed_out"
    assert summary["status"] == "succeeded", log


def test_without_redis_a_worker_runs_tasks_from_local_files(
    make_app: Callable[..., Flask],
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The local broker and result store write under ``instance/`` only: the
    worker runs in an empty directory, which stays empty."""
    app = make_app()
    assert app.extensions["celery"].conf.broker_url == "filesystem://"
    env = {"DATABASE_URL": database_url, "REDIS_URL": "", "CELERY_KEY_PREFIX": ""}
    client = app.test_client()
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    with worker_process(env, tmp_path / "worker.log") as worker:
        status_url = start_summary(client)
        job = wait_for(lambda: finished_job(client, status_url), timeout=60, what="job")
        log = worker.log()
    assert "Celery broker: local files" in log
    assert job["status"] == "succeeded", log
    assert summaries_of(app, owner_id=account_id(app)) == 1
    assert list(workdir.iterdir()) == []
    assert (Path(app.instance_path) / "celery" / "control").is_dir()


def test_beat_starts_with_the_purge_schedule(
    celery_env: dict[str, str], tmp_path: Path
) -> None:
    schedule = tmp_path / "beat-schedule"
    arguments = ["beat", f"--schedule={schedule}"]
    # "beat: Starting" comes before the schedule is set up: stopped there,
    # beat leaves an empty one. Its debug line on the tick interval comes
    # after the entries are merged and synced.
    env = {**celery_env, "LOG_LEVEL": "DEBUG"}
    ready = "beat: Ticking with max interval"
    with celery_process(arguments, env, tmp_path / "beat.log", ready):
        pass
    # Beat stores its schedule on shutdown.
    with shelve.open(str(schedule), flag="r") as stored:  # noqa: S301 - our file
        assert "jobs.purge_expired" in stored["entries"]
        assert stored["entries"]["jobs.purge_expired"].task == "jobs.purge_expired"

"""No job stays pending or running for good: the reaper sends a stuck job
again, as its owner's, or fails it, and counts what it did.

A message is lost here the way Redis restarting empty loses it: the job is
accepted (202) while no worker consumes, and its queue is deleted.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from celery.contrib.testing.worker import start_worker
from flask import Flask
from prometheus_client import REGISTRY
from redis import Redis
from sqlalchemy import update

from {{ cookiecutter.package_name }}.celery_app import enqueue
from {{ cookiecutter.package_name }}.extensions import db
from {{ cookiecutter.package_name }}.jobs import reaper, tasks
from {{ cookiecutter.package_name }}.jobs.models import Job, JobStatus
from {{ cookiecutter.package_name }}.sqltypes import utcnow

from celery_support import finished_job
from support import account_id, wait_for


def reaped(kind: str, outcome: str) -> float:
    labels = {"kind": kind, "outcome": outcome}
    return REGISTRY.get_sample_value("jobs_reaped_total", labels) or 0.0


@contextmanager
def worker(app: Flask) -> Iterator[None]:
    with start_worker(app.extensions["celery"], pool="solo", perform_ping_check=False):
        yield


def queue_length(redis_server: tuple[str, str], queue: str = "default") -> int:
    url, prefix = redis_server
    with Redis.from_url(url) as client:
        return client.llen(f"{prefix}{queue}")


def lose_queue(redis_server: tuple[str, str], queue: str = "default") -> None:
    url, prefix = redis_server
    with Redis.from_url(url) as client:
        client.delete(f"{prefix}{queue}")


def age_jobs(app: Flask, seconds: float) -> None:
    """Pretend the unfinished jobs last changed ``seconds`` ago."""
    with app.app_context():
        db.session.execute(
            update(Job)
            .where(Job.status.in_(reaper.UNFINISHED))
            .values(updated_at=utcnow() - timedelta(seconds=seconds))
        )
        db.session.commit()
        db.session.remove()


def stored(app: Flask, job_id: str) -> Job:
    with app.app_context():
        job = db.session.get(Job, uuid.UUID(job_id))
        assert job is not None
        db.session.expunge(job)
        db.session.remove()
        return job


def test_a_lost_message_is_sent_again_and_the_job_completes(
    make_app: Callable[..., Flask],
    celery_env: dict[str, str],
    redis_server: tuple[str, str],
) -> None:
    app = make_app()
    client = app.test_client()
    assert client.post("/api/events", json={"kind": "sale", "amount": "2.50"})
    accepted = client.post("/api/jobs/owner-summaries")
    assert accepted.status_code == 202
    url = accepted.get_json()["status_url"]
    job_id = accepted.get_json()["id"]
    assert queue_length(redis_server) == 1
    lose_queue(redis_server)

    # Not yet past its deadline: a job that may still be live is left alone.
    with app.app_context():
        assert reaper.reap() == []
    before = reaped("owner_summary", "requeued")
    age_jobs(app, seconds=3600)
    with app.app_context():
        assert reaper.reap(timedelta(minutes=30)) == [
            reaper.Reaped(job_id, "owner_summary", "requeued")
        ]
    assert reaped("owner_summary", "requeued") == before + 1
    assert queue_length(redis_server) == 1
    assert stored(app, job_id).requeues == 1

    with worker(app):
        done = wait_for(lambda: finished_job(client, url), what="the job sent again")
    assert done["status"] == "succeeded", done
    assert done["result"]["owner_id"] == account_id(app)  # the row's owner
    assert done["result"]["total"] == "2.50"
    assert done["attempts"] == 1


def test_the_reaper_task_fails_jobs_sent_again_too_often(
    make_app: Callable[..., Flask], celery_env: dict[str, str]
) -> None:
    """Through a worker, as beat runs it: a job past its deadline that was
    already sent again JOB_MAX_REQUEUES times is failed with a code."""
    app = make_app(JOB_DEADLINE_SECONDS=60, JOB_MAX_REQUEUES=2)
    owner_id = account_id(app)
    with app.app_context():
        lost = Job(owner_id=owner_id, kind="export", params={}, requeues=2)
        killed = Job(
            owner_id=owner_id,
            kind="owner_summary",
            params={},
            status=JobStatus.RUNNING,
            attempts=1,
            requeues=2,
        )
        db.session.add_all([lost, killed])
        db.session.commit()
        lost_id, killed_id = str(lost.id), str(killed.id)
        db.session.remove()
    age_jobs(app, seconds=3600)
    with app.app_context():
        fresh = Job(owner_id=owner_id, kind="owner_summary", params={})
        db.session.add(fresh)
        db.session.commit()
        fresh_id = str(fresh.id)
        db.session.remove()
    before = reaped("export", "failed"), reaped("owner_summary", "failed")

    with worker(app), app.app_context():
        enqueue(tasks.reap_stuck)
        client = app.test_client()
        wait_for(lambda: finished_job(client, f"/api/jobs/{lost_id}"), what="reaping")
        wait_for(lambda: finished_job(client, f"/api/jobs/{killed_id}"), what="reaping")

    assert client.get(f"/api/jobs/{lost_id}").get_json()["error"] == {
        "code": "lost",
        "message": "The job's task was lost before it could run.",
    }
    killed_error = client.get(f"/api/jobs/{killed_id}").get_json()["error"]
    assert killed_error["code"] == "timed_out"
    assert stored(app, fresh_id).status == JobStatus.PENDING
    assert reaped("export", "failed") == before[0] + 1
    assert reaped("owner_summary", "failed") == before[1] + 1
    assert "jobs.reap_stuck" in app.extensions["celery"].conf.beat_schedule


def test_the_deadline_covers_every_retry_of_a_live_job(
    make_app: Callable[..., Flask],
    celery_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CELERY_TASK_TIME_LIMIT", "100")
    monkeypatch.setenv("CELERY_VISIBILITY_TIMEOUT", "250")
    app = make_app()
    with app.app_context():
        # 6 runs of 100 s, 5 countdowns of 300 s, one visibility timeout.
        assert reaper.deadline(app.extensions["celery"]) == timedelta(
            seconds=6 * 100 + 5 * 300 + 250
        )
    app.config["JOB_DEADLINE_SECONDS"] = 5
    with app.app_context():
        assert reaper.deadline(app.extensions["celery"]) == timedelta(seconds=5)

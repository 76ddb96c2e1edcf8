"""Job bookkeeping on plain values: create and send, start, finish, purge;
and :func:`start_job`, the answer every view that starts a job gives."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, cast

from celery import Task
from flask import url_for
from flask.wrappers import Response
from sqlalchemy import CursorResult, delete, select

from ..celery_app import ENQUEUE_ERRORS, enqueue
from ..extensions import db
from ..http.problems import problem
from ..sqltypes import utcnow
from .errors import JobError
from .models import FINISHED, Job, JobStatus
from .schemas import JobAccepted, JobOut

RETRY_AFTER_SECONDS = 10
# A submitted job (202), or the 503 problem when the broker is away.
Accepted = tuple[JobAccepted, int, dict[str, str]] | Response


class BrokerUnavailableError(RuntimeError):
    """The job was recorded as failed: its task could not be sent."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.id} could not be enqueued")
        self.job = job


def submit_job(owner_id: int, kind: str, params: dict[str, Any], task: Task) -> Job:
    """Record ``owner_id``'s job, then send ``task(job_id, owner_id)``.

    The row is committed first, so the worker always finds it. If sending
    fails the row is marked failed before the error is raised: nothing is
    left pending that no worker will ever pick up.
    """
    job = Job(
        owner_id=owner_id,
        kind=kind,
        params=params,
        status=JobStatus.PENDING,
        attempts=0,
    )
    db.session.add(job)
    db.session.commit()
    try:
        enqueue(task, str(job.id), owner_id, task_id=str(job.id))
    except ENQUEUE_ERRORS as exc:  # logged by enqueue, once per outage
        finish(job, JobStatus.FAILED, error=JobError.BROKER_UNAVAILABLE)
        raise BrokerUnavailableError(job) from exc
    return job


def start_job(
    owner_id: int,
    kind: str,
    params: dict[str, Any],
    task: Task,
    status_endpoint: str,
) -> Accepted:
    """Submit a job: 202 with its status URL, or 503 if the broker is down."""
    try:
        job = submit_job(owner_id, kind, params, task)
    except BrokerUnavailableError as exc:
        response = problem(
            503,
            "Service Unavailable",
            "The task queue is unreachable. The job was recorded as failed; "
            "try again later.",
            job_id=exc.job.id,
        )
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
    status_url = url_for(status_endpoint, job_id=job.id)
    # Validated once, as JobOut: the status URL is all JobAccepted adds.
    accepted = JobAccepted.model_construct(
        **dict(JobOut.model_validate(job)), status_url=status_url
    )
    return accepted, 202, {"Location": status_url}


def get_job(owner_id: int, job_id: uuid.UUID, kind: str | None = None) -> Job | None:
    """The job, if it exists, belongs to ``owner_id`` (and is of ``kind``)."""
    query = select(Job).where(Job.id == job_id, Job.owner_id == owner_id)
    if kind is not None:
        query = query.where(Job.kind == kind)
    return db.session.scalar(query)


def start(job_id: str, owner_id: int) -> Job | None:
    """Mark ``owner_id``'s job running and count the attempt; None if already
    finished.

    A redelivered message (its worker died) finds a finished job and stops,
    so a job's effect is applied once however often its task is delivered.
    """
    job = db.session.scalar(
        select(Job)
        .where(Job.id == uuid.UUID(job_id), Job.owner_id == owner_id)
        .with_for_update()
    )
    if job is None:
        raise LookupError(f"no job {job_id} of account {owner_id}")
    if job.status in FINISHED:
        db.session.rollback()
        return None
    job.status = JobStatus.RUNNING
    job.attempts += 1
    job.started_at = job.started_at or utcnow()
    db.session.commit()
    return job


def finish(
    job: Job,
    status: JobStatus,
    *,
    result: dict[str, Any] | None = None,
    error: JobError | None = None,
) -> None:
    """Record the outcome. Commits, together with any pending change."""
    job.status = status
    job.result = result
    job.error_code = error
    job.finished_at = utcnow()
    db.session.commit()


def fail(job_id: str, error: JobError) -> None:
    job = db.session.get(Job, uuid.UUID(job_id))
    if job is not None and job.status not in FINISHED:
        finish(job, JobStatus.FAILED, error=error)


def purge_finished_before(age: timedelta) -> int:
    """Delete jobs finished longer than ``age`` ago; return how many."""
    cutoff = utcnow() - age
    # A DELETE always has a cursor result; Session.execute is typed more loosely.
    result = cast(
        "CursorResult[Any]",
        db.session.execute(delete(Job).where(Job.finished_at < cutoff)),
    )
    db.session.commit()
    return result.rowcount

"""Every job reaches a final state, even when its message is lost.

A job's message can vanish: Redis restarted empty while the job waited in
the queue, or the worker holding it was killed whole (an out-of-memory
kill, a lost machine) with the row left ``running``. (A task killed at its
hard time limit is different: the worker's main process runs its
``on_failure``, which fails the job ``timed_out``.)

:func:`reap` finds unfinished jobs that have shown no sign of life for
longer than a live job can go without one, and sends their task again, as
its owner's, or, once they have been sent again ``JOB_MAX_REQUEUES``
times, marks them failed: ``lost`` if they never started, ``timed_out`` if
they did.

Sending again is safe: every job task begins with ``services.start``, so a
second message of a job that is done changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from celery import Celery
from flask import current_app
from prometheus_client import Counter
from sqlalchemy import select

from ..celery_app import ENQUEUE_ERRORS, AppTask, enqueue
from ..extensions import db
from ..sqltypes import utcnow
from .errors import JobError
from .models import Job, JobStatus

log = logging.getLogger(__name__)

UNFINISHED = (JobStatus.PENDING, JobStatus.RUNNING)
# Unfinished jobs found making no progress, by job kind and what was done:
# "requeued" (sent again) or "failed". Served on the worker's /metrics.
JOBS_REAPED = Counter(
    "jobs_reaped",
    "Stuck jobs sent again or failed by the reaper, by job kind and outcome.",
    ("kind", "outcome"),
)


def deadline(celery: Celery) -> timedelta:
    """How long a live job can go without its row changing.

    ``updated_at`` moves when a job is sent, each time its task starts
    (``services.start``) and when it is sent again. Between two such moves
    a live job can at most: have each of its ``max_retries + 1`` runs fail
    before ``start`` commits (the database was away) after up to the hard
    time limit each, wait out ``max_retries`` retry countdowns of at most
    ``retry_backoff_max`` (jitter only shortens them), and wait once for
    Redis to hand a message held by a worker that died to another
    (``visibility_timeout``). With the defaults: 6 x 600 s + 5 x 300 s +
    1200 s = 6300 s, 1 h 45 min. ``JOB_DEADLINE_SECONDS`` overrides it.

    Time spent waiting in a backlogged queue has no bound Celery knows of:
    a job that waits longer is sent a second time, which is harmless (see
    the module docstring), and after ``JOB_MAX_REQUEUES`` deadlines without
    progress it is failed.
    """
    configured = current_app.config.get("JOB_DEADLINE_SECONDS")
    if configured is not None:
        return timedelta(seconds=configured)
    conf = celery.conf
    runs = AppTask.max_retries + 1
    visibility = (conf.broker_transport_options or {}).get("visibility_timeout", 0)
    return timedelta(
        seconds=runs * conf.task_time_limit
        + AppTask.max_retries * AppTask.retry_backoff_max
        + visibility
    )


@dataclass(frozen=True)
class Reaped:
    job_id: str
    kind: str
    outcome: str  # "requeued" or "failed"


def job_tasks(celery: Celery) -> dict[str, Any]:
    """The task of each job kind, as the tasks declare it (``job_kind``)."""
    return {
        task.job_kind: task
        for task in celery.tasks.values()
        if getattr(task, "job_kind", None)
    }


def reap(age: timedelta | None = None) -> list[Reaped]:
    """Send again or fail every unfinished job unchanged for ``age``
    (default: :func:`deadline`). Rows another transaction holds (a task
    starting right now) are skipped, to be looked at next time."""
    celery: Celery = current_app.extensions["celery"]
    cutoff = utcnow() - (deadline(celery) if age is None else age)
    max_requeues = current_app.config["JOB_MAX_REQUEUES"]
    tasks = job_tasks(celery)
    stuck = db.session.scalars(
        select(Job)
        .where(Job.status.in_(UNFINISHED), Job.updated_at < cutoff)
        .order_by(Job.updated_at)
        .with_for_update(skip_locked=True)
    ).all()
    reaped: list[Reaped] = []
    to_send: list[tuple[Any, str, int]] = []
    for job in stuck:
        task = tasks.get(job.kind)
        if task is not None and job.requeues < max_requeues:
            job.requeues += 1
            job.updated_at = utcnow()
            to_send.append((task, str(job.id), job.owner_id))
            continue
        started = job.status == JobStatus.RUNNING
        job.status = JobStatus.FAILED
        job.error_code = JobError.TIMED_OUT if started else JobError.LOST
        job.finished_at = utcnow()
        reaped.append(Reaped(str(job.id), job.kind, "failed"))
    kinds = {str(job.id): job.kind for job in stuck}
    # Rows first: a message sent before the commit could start a task that
    # waits on these locks. Sending can still fail; the job is then looked
    # at again after another deadline.
    db.session.commit()
    for task, job_id, owner_id in to_send:
        try:
            enqueue(task, job_id, owner_id, task_id=job_id)
        except ENQUEUE_ERRORS as exc:
            log.warning("could not send job %s again: %s", job_id, exc)
            continue
        reaped.append(Reaped(job_id, kinds[job_id], "requeued"))
    for item in reaped:
        JOBS_REAPED.labels(item.kind, item.outcome).inc()
        log.warning("job %s (%s) stuck: %s", item.job_id, item.kind, item.outcome)
    return reaped

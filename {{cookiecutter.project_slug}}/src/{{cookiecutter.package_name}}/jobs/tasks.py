"""Job tasks. Each takes a job id and is safe to run more than once; the
periodic ones say how often beat sends them (``run_every``)."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import timedelta
from decimal import MAX_PREC, Decimal, localcontext
from typing import Any

from celery import shared_task
from flask import current_app
from sqlalchemy import func, select

from ..celery_app import AppTask
from ..events.models import Event
from ..extensions import db
from ..outages import describe
from . import reaper, services
from .errors import classify
from .models import JobStatus

log = logging.getLogger(__name__)

OWNER_SUMMARY_KIND = "owner_summary"
SUMMARY_KIND = "summary"
# Summary events get an id derived from their job: a second delivery of the
# same job cannot insert a second summary.
SUMMARY_NAMESPACE = uuid.UUID("6f1c8d52-7a3e-4d0b-9b61-3c2f5e8a9d47")
CENT = Decimal("0.01")


class JobTask(AppTask):
    """A task whose arguments are a job id and the id of the account that
    owns it (plain values; the task touches that account's rows only). Its
    final failure (after
    any retries) marks the job failed, so no job stays running forever.

    The job row is the result: nothing is written to the result backend,
    and sending does not wait on it. ``job_kind`` names the jobs the task
    runs, so the reaper knows which task to send a stuck job to again.
    """

    ignore_result = True
    job_kind: str | None = None

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        """Store a code, never the exception's text (an SQL statement and
        its parameters); log what it was, without the statement, under the
        task's request id. Sentry gets the exception itself from Celery."""
        code = classify(exc)
        with self.sender_context(), self.app.flask_app.app_context():
            log.warning("job %s failed (%s): %s", args[0], code, describe(exc))
            services.fail(str(args[0]), code)


def owner_total(owner_id: int) -> tuple[int, Decimal]:
    """How many events ``owner_id`` has, and their exact total.

    The total has no upper bound: an owner may have any number of events,
    each up to the largest amount. PostgreSQL adds ``numeric`` values
    exactly, to any size. SQLite would add them as floating point (inexact
    past about 15 digits) or overflow as integers, so there they are added
    up here, as decimals with all the precision the sum needs.
    """
    where = (Event.owner_id == owner_id, Event.kind != SUMMARY_KIND)
    if db.session.get_bind().dialect.name == "postgresql":
        count, total = db.session.execute(
            select(func.count(), func.coalesce(func.sum(Event.amount), 0)).where(*where)
        ).one()
    else:
        count, total = 0, Decimal(0)
        amounts = db.session.scalars(
            select(Event.amount).where(*where).execution_options(yield_per=1000)
        )
        with localcontext(prec=MAX_PREC):
            for amount in amounts:
                count += 1
                total += amount
    with localcontext(prec=MAX_PREC):
        return count, Decimal(total).quantize(CENT)


@shared_task(base=JobTask, name="jobs.summarize_owner", job_kind=OWNER_SUMMARY_KIND)
def summarize_owner(job_id: str, owner_id: int) -> dict[str, Any]:
    """Add up an owner's events and record the total as a summary event."""
    job = services.start(job_id, owner_id)
    if job is None:
        log.info("job %s finished already; nothing to do", job_id)
        return {"job_id": job_id, "skipped": True}
    count, total = owner_total(owner_id)
    summary_id = uuid.uuid5(SUMMARY_NAMESPACE, job_id)
    if db.session.get(Event, summary_id) is None:
        db.session.add(
            Event(
                id=summary_id,
                owner_id=owner_id,
                kind=SUMMARY_KIND,
                # The total is in the payload: it can outgrow an amount.
                amount=Decimal("0.00"),
                payload=json.dumps(
                    {"job_id": job_id, "events": count, "total": str(total)}
                ),
            )
        )
    result = {
        "owner_id": owner_id,
        "events": count,
        "total": str(total),
        "summary_event_id": str(summary_id),
    }
    # One commit: the summary event and the job's success land together.
    services.finish(job, JobStatus.SUCCEEDED, result=result)
    log.info("owner %s summarized: %s events, total %s", owner_id, count, total)
    return result


@shared_task(name="jobs.reap_stuck", ignore_result=True, run_every=timedelta(minutes=5))
def reap_stuck() -> int:
    """Periodic (beat): send again or fail jobs stuck unfinished (reaper.py)."""
    return len(reaper.reap())


@shared_task(name="jobs.purge_expired", run_every=timedelta(hours=1))
def purge_expired() -> int:
    """Periodic (beat): delete jobs finished more than JOB_RETENTION_DAYS ago."""
    days = current_app.config["JOB_RETENTION_DAYS"]
    deleted = services.purge_finished_before(timedelta(days=days))
    log.info("purged %s jobs finished over %s days ago", deleted, days)
    return deleted

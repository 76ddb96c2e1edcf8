"""Job tasks. Each takes a job id and is safe to run more than once."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

from celery import shared_task
from flask import current_app
from sqlalchemy import func, select

from ..celery_app import AppTask
from ..events.models import Event
from ..extensions import db
from . import services
from .models import JobStatus

log = logging.getLogger(__name__)

SUMMARY_KIND = "summary"
# Summary events get an id derived from their job: a second delivery of the
# same job cannot insert a second summary.
SUMMARY_NAMESPACE = uuid.UUID("6f1c8d52-7a3e-4d0b-9b61-3c2f5e8a9d47")


class JobTask(AppTask):
    """A task whose arguments are a job id and the id of the account that
    owns it (plain values; the task touches that account's rows only). Its
    final failure (after
    any retries) marks the job failed, so no job stays running forever.

    The job row is the result: nothing is written to the result backend,
    and sending does not wait on it.
    """

    ignore_result = True

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        with self.app.flask_app.app_context():
            services.fail(str(args[0]), f"{type(exc).__name__}: {exc}")


@shared_task(base=JobTask, name="jobs.summarize_owner")
def summarize_owner(job_id: str, owner_id: int) -> dict[str, Any]:
    """Add up an owner's events and record the total as a summary event."""
    job = services.start(job_id, owner_id)
    if job is None:
        log.info("job %s finished already; nothing to do", job_id)
        return {"job_id": job_id, "skipped": True}
    count, total = db.session.execute(
        select(func.count(), func.coalesce(func.sum(Event.amount), 0)).where(
            Event.owner_id == owner_id, Event.kind != SUMMARY_KIND
        )
    ).one()
    total = Decimal(total).quantize(Decimal("0.01"))
    summary_id = uuid.uuid5(SUMMARY_NAMESPACE, job_id)
    if db.session.get(Event, summary_id) is None:
        db.session.add(
            Event(
                id=summary_id,
                owner_id=owner_id,
                kind=SUMMARY_KIND,
                amount=total,
                payload=json.dumps({"job_id": job_id, "events": count}),
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


@shared_task(name="jobs.purge_expired")
def purge_expired() -> int:
    """Periodic (beat): delete jobs finished more than JOB_RETENTION_DAYS ago."""
    days = current_app.config["JOB_RETENTION_DAYS"]
    deleted = services.purge_finished_before(timedelta(days=days))
    log.info("purged %s jobs finished over %s days ago", deleted, days)
    return deleted

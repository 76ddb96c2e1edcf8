"""Export tasks, on a queue of their own (``exports``), so dedicated
workers can give exports their own capacity."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from celery import shared_task
from flask import current_app
from sqlalchemy import select

from ..events.export import csv_chunks, ndjson_chunks
from ..events.schemas import ExportFilters
from ..extensions import db
from ..jobs import services
from ..jobs.models import Job, JobStatus
from ..jobs.tasks import JobTask
from ..sqltypes import utcnow
from . import files

log = logging.getLogger(__name__)
KIND = "export"
QUEUE = "exports"


@shared_task(base=JobTask, name="exports.write", job_kind=KIND, routed_to=QUEUE)
def write_export(job_id: str, owner_id: int) -> dict[str, Any] | None:
    """Write ``owner_id``'s export file. A redelivery after success does
    nothing; one after a crash mid-write writes the file again, whole."""
    job = services.start(job_id, owner_id)
    if job is None:
        return None
    fmt = job.params["format"]
    filters = ExportFilters.model_validate(job.params.get("filters", {}))
    write = csv_chunks if fmt == "csv" else ndjson_chunks
    chunks = write(owner_id, filters)
    name = files.filename(job.id, fmt)
    size, sha256 = files.write_atomically(
        Path(current_app.config["EXPORT_DIR"]), name, chunks
    )
    result = {"format": fmt, "filename": name, "size": size, "sha256": sha256}
    services.finish(job, JobStatus.SUCCEEDED, result=result)
    log.info("export %s written: %s bytes", job_id, size)
    return result


@shared_task(
    name="exports.purge_expired", routed_to=QUEUE, run_every=timedelta(minutes=15)
)
def purge_expired() -> int:
    """Periodic (beat): delete exports older than EXPORT_TTL_HOURS, file and
    row, and the temporary files of exports killed mid-write."""
    cutoff = utcnow() - timedelta(hours=current_app.config["EXPORT_TTL_HOURS"])
    directory = Path(current_app.config["EXPORT_DIR"])
    expired = db.session.scalars(
        select(Job).where(Job.kind == KIND, Job.finished_at < cutoff)
    ).all()
    for job in expired:
        if job.result and job.result.get("filename"):
            (directory / files.filename(job.id, job.result["format"])).unlink(
                missing_ok=True
            )
        db.session.delete(job)
    db.session.commit()
    stale = files.remove_stale_temporaries(directory, temporary_file_max_age())
    log.info("purged %s expired exports and %s temporary files", len(expired), stale)
    return len(expired)


def temporary_file_max_age() -> timedelta:
    """Twice the hard time limit: no running export writes a file that old,
    with room for clocks of hosts sharing the directory that disagree."""
    celery = current_app.extensions["celery"]
    return 2 * timedelta(seconds=celery.conf.task_time_limit)

"""``/api/jobs``: start background work, then poll its status."""

from __future__ import annotations

import uuid
from typing import Any

from celery import Task
from flask import Blueprint, request, url_for
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ConfigDict

from ..events.schemas import OwnerId
from ..extensions import db
from ..http.problems import problem
from ..http.validation import parse
from . import services, tasks
from .models import Job

bp = Blueprint("jobs", __name__, url_prefix="/api/jobs")

RETRY_AFTER_SECONDS = 10


class OwnerSummaryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    owner_id: OwnerId


def start_job(
    kind: str, params: dict[str, Any], task: Task, status_endpoint: str
) -> ResponseReturnValue:
    """Submit a job: 202 with its status URL, or 503 if the broker is down."""
    try:
        job = services.submit_job(kind, params, task)
    except services.BrokerUnavailableError as exc:
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
    return {**job.to_dict(), "status_url": status_url}, 202, {"Location": status_url}


@bp.post("/owner-summaries")
def create_owner_summary() -> ResponseReturnValue:
    data = parse(OwnerSummaryRequest, request.get_json())
    return start_job(
        "owner_summary", {"owner_id": data.owner_id}, tasks.summarize_owner, "jobs.get"
    )


@bp.get("/<uuid:job_id>")
def get(job_id: uuid.UUID) -> ResponseReturnValue:
    job = db.get_or_404(Job, job_id, description=f"No job with id {job_id}.")
    return job.to_dict()

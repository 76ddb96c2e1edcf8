"""``/api/jobs``: start background work, then poll its status."""

from __future__ import annotations

import uuid

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


@bp.post("/owner-summaries")
def create_owner_summary() -> ResponseReturnValue:
    data = parse(OwnerSummaryRequest, request.get_json())
    try:
        job = services.submit_job(
            "owner_summary", {"owner_id": data.owner_id}, tasks.summarize_owner
        )
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
    status_url = url_for("jobs.get", job_id=job.id)
    return {**job.to_dict(), "status_url": status_url}, 202, {"Location": status_url}


@bp.get("/<uuid:job_id>")
def get(job_id: uuid.UUID) -> ResponseReturnValue:
    job = db.get_or_404(Job, job_id, description=f"No job with id {job_id}.")
    return job.to_dict()

"""``/api/jobs``: start background work, then poll its status."""

from __future__ import annotations

import uuid

from flask import Blueprint

from ..accounts import Scope, current_identity
from ..http.problems import APIError
from ..openapi import operation
from . import services, tasks
from .schemas import JobAccepted, JobOut, OwnerSummaryRequest
from .services import Accepted, start_job

bp = Blueprint("jobs", __name__, url_prefix="/api/jobs")

TAG = "jobs"


@bp.post("/owner-summaries")
@operation("createOwnerSummary", ok=(202, JobAccepted), scope=Scope.WRITE, tag=TAG)
def create_owner_summary(json: OwnerSummaryRequest) -> Accepted:
    """Start a summary of the caller's events, made in the background.

    The body may be left out; if sent, it must be an empty object.
    """
    return start_job(
        current_identity().account_id,
        tasks.OWNER_SUMMARY_KIND,
        {},
        tasks.summarize_owner,
        "jobs.get",
    )


@bp.get("/<uuid:job_id>")
@operation("getJob", ok=(200, JobOut), scope=Scope.READ, problems=[404], tag=TAG)
def get(job_id: uuid.UUID) -> JobOut:
    """A job's status and, once it finished, its result or error."""
    job = services.get_job(current_identity().account_id, job_id)
    if job is None:
        raise APIError(404, f"No job with id {job_id}.")
    return JobOut.model_validate(job)

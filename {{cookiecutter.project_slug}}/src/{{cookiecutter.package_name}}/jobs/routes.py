"""``/api/jobs``: start background work, then poll its status."""

from __future__ import annotations

import uuid
from typing import Any

from celery import Task
from flask import Blueprint, request, url_for
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ConfigDict

from ..accounts import Scope, current_identity, require
from ..http.problems import APIError, problem
from ..http.validation import parse
from . import services, tasks

bp = Blueprint("jobs", __name__, url_prefix="/api/jobs")

RETRY_AFTER_SECONDS = 10


class OwnerSummaryRequest(BaseModel):
    """Nothing to choose yet: the summary is of the caller's own events."""

    model_config = ConfigDict(extra="forbid")


def start_job(
    owner_id: int,
    kind: str,
    params: dict[str, Any],
    task: Task,
    status_endpoint: str,
) -> ResponseReturnValue:
    """Submit a job: 202 with its status URL, or 503 if the broker is down."""
    try:
        job = services.submit_job(owner_id, kind, params, task)
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
@require(Scope.WRITE)
def create_owner_summary() -> ResponseReturnValue:
    # The body may be left out; if sent, it must be a (for now empty) object.
    parse(OwnerSummaryRequest, request.get_json() if request.content_length else {})
    return start_job(
        current_identity().account_id,
        tasks.OWNER_SUMMARY_KIND,
        {},
        tasks.summarize_owner,
        "jobs.get",
    )


@bp.get("/<uuid:job_id>")
@require(Scope.READ)
def get(job_id: uuid.UUID) -> ResponseReturnValue:
    job = services.get_job(current_identity().account_id, job_id)
    if job is None:
        raise APIError(404, f"No job with id {job_id}.")
    return job.to_dict()

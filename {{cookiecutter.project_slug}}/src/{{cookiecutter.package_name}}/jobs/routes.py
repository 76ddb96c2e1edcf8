"""``/api/jobs``: start background work, then poll its status."""

from __future__ import annotations

import uuid
from typing import Any

from celery import Task
from flask import Blueprint, url_for
from flask.wrappers import Response

from ..accounts import Scope, current_identity
from ..http.problems import APIError, problem
from ..openapi import operation
from . import services, tasks
from .schemas import JobAccepted, JobOut, OwnerSummaryRequest

bp = Blueprint("jobs", __name__, url_prefix="/api/jobs")

RETRY_AFTER_SECONDS = 10
TAG = "jobs"

# A submitted job (202), or the 503 problem when the broker is away.
Accepted = tuple[JobAccepted, int, dict[str, str]] | Response


def start_job(
    owner_id: int,
    kind: str,
    params: dict[str, Any],
    task: Task,
    status_endpoint: str,
) -> Accepted:
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
    accepted = JobAccepted.model_validate(
        {**JobOut.model_validate(job).model_dump(), "status_url": status_url}
    )
    return accepted, 202, {"Location": status_url}


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

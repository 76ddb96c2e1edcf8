"""``/api/jobs``: start background work, then poll its status."""

from __future__ import annotations

import uuid

from flask import Blueprint, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ConfigDict

from ..accounts import Scope, current_identity, require
from ..http.problems import APIError
from ..http.validation import parse
from . import services, tasks
from .services import start_job

bp = Blueprint("jobs", __name__, url_prefix="/api/jobs")


class OwnerSummaryRequest(BaseModel):
    """Nothing to choose yet: the summary is of the caller's own events."""

    model_config = ConfigDict(extra="forbid")


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

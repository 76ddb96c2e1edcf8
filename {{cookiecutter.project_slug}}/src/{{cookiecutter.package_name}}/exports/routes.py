"""``/api/exports``: start an export, poll it, download it.

Downloads never stream bytes through Python in production: the app answers
with ``X-Accel-Redirect`` and nginx sends the file from an ``internal``
location, freeing the worker at once. (Flask's ``USE_X_SENDFILE`` sets
``X-Sendfile``, which nginx ignores.) In development ``send_file`` serves it.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Literal

from flask import Blueprint, current_app, request, send_file, url_for
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ConfigDict

from ..events.schemas import ExportFilters
from ..extensions import db
from ..http.problems import APIError
from ..http.validation import parse
from ..jobs.models import Job, JobStatus
from ..jobs.routes import start_job
from . import files, tasks

bp = Blueprint("exports", __name__, url_prefix="/api/exports")


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["csv", "ndjson"]
    filters: ExportFilters = ExportFilters()


def get_export(export_id: uuid.UUID) -> Job:
    job = db.session.get(Job, export_id)
    if job is None or job.kind != tasks.KIND:
        raise APIError(404, f"No export with id {export_id}.")
    return job


@bp.post("")
def create() -> ResponseReturnValue:
    data = parse(ExportRequest, request.get_json())
    params = {
        "format": data.format,
        "filters": data.filters.model_dump(mode="json", exclude_none=True),
    }
    return start_job(tasks.KIND, params, tasks.write_export, "exports.get")


@bp.get("/<uuid:job_id>")
def get(job_id: uuid.UUID) -> ResponseReturnValue:
    job = get_export(job_id)
    body = job.to_dict()
    if job.status == JobStatus.SUCCEEDED:
        body["download_url"] = url_for("exports.download", job_id=job.id)
    return body


@bp.get("/<uuid:job_id>/download")
def download(job_id: uuid.UUID) -> ResponseReturnValue:
    job = get_export(job_id)
    if job.status != JobStatus.SUCCEEDED:
        raise APIError(409, f"The export is {job.status}, not ready to download.")
    fmt = job.params["format"]
    name = files.filename(job.id, fmt)
    path = Path(current_app.config["EXPORT_DIR"]) / name
    if not path.is_file():
        raise APIError(404, "The export has expired.")
    download_name = f"events-{job.id}.{fmt}"
    if current_app.config["EXPORT_X_ACCEL"]:
        response = current_app.response_class(mimetype=files.FORMATS[fmt])
        response.headers["X-Accel-Redirect"] = (
            current_app.config["EXPORT_ACCEL_PREFIX"] + name
        )
        response.headers["Content-Disposition"] = (
            f'attachment; filename="{download_name}"'
        )
        return response
    return send_file(
        path,
        mimetype=files.FORMATS[fmt],
        as_attachment=True,
        download_name=download_name,
    )

"""``/api/exports``: start an export, poll it, download it.

Starting and polling need a bearer token. The status of a finished export
carries a short-lived signed ``download_url``, bound to the export and its
account, that works without the header, so a browser can follow it. A
tampered or expired signature gets a problem response, never the file.

Downloads never stream bytes through Python in production: the app answers
with ``X-Accel-Redirect`` and nginx sends the file from an ``internal``
location, freeing the worker at once. (Flask's ``USE_X_SENDFILE`` sets
``X-Sendfile``, which nginx ignores.) In development ``send_file`` serves it.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Literal

from flask import Blueprint, current_app, send_file, url_for
from flask.wrappers import Response
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from pydantic import BaseModel, ConfigDict

from ..accounts import Scope, current_identity
from ..events.schemas import ExportFilters
from ..http.problems import APIError
from ..jobs import services as jobs
from ..jobs.models import Job, JobStatus
from ..jobs.schemas import JobAccepted, JobOut
from ..jobs.services import Accepted, start_job
from ..openapi import operation
from . import files, tasks

bp = Blueprint("exports", __name__, url_prefix="/api/exports")

DOWNLOAD_SALT = "exports.download"
TAG = "exports"


class ExportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: Literal["csv", "ndjson"]
    filters: ExportFilters = ExportFilters()


class ExportOut(JobOut):
    """An export's state; once it succeeded, a signed ``download_url``."""

    download_url: str | None = None


class DownloadQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signature: str = ""


def get_export(owner_id: int, export_id: uuid.UUID) -> Job:
    job = jobs.get_job(owner_id, export_id, kind=tasks.KIND)
    if job is None:
        raise APIError(404, f"No export with id {export_id}.")
    return job


def download_signer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=DOWNLOAD_SALT)


def signed_download_url(job: Job) -> str:
    signature = download_signer().dumps([str(job.id), job.owner_id])
    return url_for("exports.download", job_id=job.id, signature=signature)


def verified_owner(job_id: uuid.UUID, signature: str) -> int:
    """The account a download link was signed for, if it is genuine, unexpired
    and for this export; else a 403 that says which."""
    try:
        signed: Any = download_signer().loads(
            signature, max_age=current_app.config["EXPORT_DOWNLOAD_URL_TTL_SECONDS"]
        )
    except SignatureExpired:
        raise APIError(
            403, "The download link has expired; get a new one from the export."
        ) from None
    except BadSignature:
        raise APIError(403, "The download link is not valid.") from None
    if (
        not isinstance(signed, list)
        or len(signed) != len(["export", "account"])
        or signed[0] != str(job_id)
        or not isinstance(signed[1], int)
    ):
        raise APIError(403, "The download link is not valid.")
    return signed[1]


@bp.post("")
@operation("createExport", ok=(202, JobAccepted), scope=Scope.READ, tag=TAG)
def create(json: ExportRequest) -> Accepted:
    """Start an export of the caller's events to a file, made in the background."""
    params = {
        "format": json.format,
        "filters": json.filters.model_dump(mode="json", exclude_none=True),
    }
    return start_job(
        current_identity().account_id,
        tasks.KIND,
        params,
        tasks.write_export,
        "exports.get",
    )


@bp.get("/<uuid:job_id>")
@operation("getExport", ok=(200, ExportOut), scope=Scope.READ, problems=[404], tag=TAG)
def get(job_id: uuid.UUID) -> ExportOut:
    """An export's status; once it succeeded, a signed `download_url`."""
    job = get_export(current_identity().account_id, job_id)
    export = ExportOut.model_validate(job)
    if job.status == JobStatus.SUCCEEDED:
        export.download_url = signed_download_url(job)
    return export


@bp.get("/<uuid:job_id>/download")
@operation(
    "downloadExport", ok=(200, None), scope=None, problems=[403, 404, 409], tag=TAG
)
def download(job_id: uuid.UUID, query: DownloadQuery) -> Response:
    """Download a finished export: the signed link alone authorizes it."""
    signature = query.signature
    if not signature:
        raise APIError(403, "A signed download link is required.")
    job = get_export(verified_owner(job_id, signature), job_id)
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

"""``/api/events``: the edge where request data becomes plain values.

Every route needs a bearer token; the caller's account id is read here,
once, and every query is scoped to it. Another account's event answers
exactly as an unknown one does.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from flask import (
    Blueprint,
    Response,
    current_app,
    request,
    stream_with_context,
    url_for,
)
from flask.typing import ResponseReturnValue

from ..accounts import Scope, current_identity, require
from ..http.problems import APIError
from ..http.validation import parse
from ..sqltypes import utcnow
from . import export, services
from .pagination import Cursor
from .schemas import EventCreate, EventQuery, ExportFilters

bp = Blueprint("events", __name__, url_prefix="/api/events")


@bp.post("")
@require(Scope.WRITE)
def create() -> ResponseReturnValue:
    data = parse(EventCreate, request.get_json())
    event = services.create_event(current_identity().account_id, data)
    location = url_for("events.get", event_id=event.id)
    return event.to_dict(), 201, {"Location": location}


@bp.get("/<uuid:event_id>")
@require(Scope.READ)
def get(event_id: uuid.UUID) -> ResponseReturnValue:
    event = services.get_event(current_identity().account_id, event_id)
    if event is None:
        raise APIError(404, f"No event with id {event_id}.")
    return event.to_dict()


@bp.get("")
@require(Scope.READ)
def index() -> ResponseReturnValue:
    query = parse(EventQuery, request.args.to_dict(), what="query")
    page = services.list_events(
        current_identity().account_id,
        limit=query.limit,
        after=Cursor.decode(query.cursor) if query.cursor else None,
        kind=query.kind,
    )
    return {
        "items": [event.to_dict() for event in page.items],
        "next_cursor": page.next_cursor.encode() if page.next_cursor else None,
    }


def streaming_download(
    chunks: Iterator[bytes], extension: str, mimetype: str
) -> Response:
    """A download streamed as it is produced, through nginx unbuffered."""
    filename = f"events-{utcnow():%Y%m%dT%H%M%SZ}.{extension}"
    # The generator keeps the request context until it ends or is closed.
    response = current_app.response_class(
        stream_with_context(chunks), mimetype=mimetype
    )
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["X-Accel-Buffering"] = "no"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/export.csv")
@require(Scope.READ)
def export_csv() -> ResponseReturnValue:
    filters = parse(ExportFilters, request.args.to_dict(), what="query")
    chunks = export.csv_chunks(current_identity().account_id, filters)
    return streaming_download(chunks, "csv", "text/csv")


@bp.get("/export.ndjson")
@require(Scope.READ)
def export_ndjson() -> ResponseReturnValue:
    filters = parse(ExportFilters, request.args.to_dict(), what="query")
    chunks = export.ndjson_chunks(current_identity().account_id, filters)
    return streaming_download(chunks, "ndjson", "application/x-ndjson")

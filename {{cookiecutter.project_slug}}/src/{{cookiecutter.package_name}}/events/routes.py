"""``/api/events``: the edge where request data becomes plain values.

Every route needs a bearer token; the caller's account id is read here,
once, and every query is scoped to it. Another account's event answers
exactly as an unknown one does.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Generator

from flask import (
    Blueprint,
    Response,
    current_app,
    g,
    stream_with_context,
    url_for,
)

from .. import tracing
from ..accounts import Scope, current_identity
from ..http.problems import APIError
from ..logs import identity_var, request_id_var
from ..openapi import operation
from ..sqltypes import utcnow
from . import export, services
from .pagination import Cursor
from .schemas import EventCreate, EventOut, EventPage, EventQuery, ExportFilters

bp = Blueprint("events", __name__, url_prefix="/api/events")
log = logging.getLogger(__name__)
TAG = "events"


@bp.post("")
@operation("createEvent", ok=(201, EventOut), scope=Scope.WRITE, tag=TAG)
def create(json: EventCreate) -> tuple[EventOut, int, dict[str, str]]:
    """Record an event for the caller's account."""
    event = services.create_event(current_identity().account_id, json)
    location = url_for("events.get", event_id=event.id)
    return EventOut.model_validate(event), 201, {"Location": location}


@bp.get("/<uuid:event_id>")
@operation("getEvent", ok=(200, EventOut), scope=Scope.READ, problems=[404], tag=TAG)
def get(event_id: uuid.UUID) -> EventOut:
    """One of the caller's events."""
    event = services.get_event(current_identity().account_id, event_id)
    if event is None:
        raise APIError(404, f"No event with id {event_id}.")
    return EventOut.model_validate(event)


@bp.get("")
@operation("listEvents", ok=(200, EventPage), scope=Scope.READ, tag=TAG)
def index(query: EventQuery) -> EventPage:
    """The caller's events, a page at a time: pass `next_cursor` for the next."""
    page = services.list_events(
        current_identity().account_id,
        limit=query.limit,
        after=Cursor.decode(query.cursor) if query.cursor else None,
        kind=query.kind,
    )
    # One validation for the page, not one call per event.
    return EventPage.model_validate(
        {
            "items": page.items,
            "next_cursor": page.next_cursor.encode() if page.next_cursor else None,
        },
        from_attributes=True,
    )


def failing_loudly(
    chunks: Generator[bytes],
    filename: str,
    request_id: str,
    identity: tuple[str, str],
) -> Generator[bytes]:
    """``chunks``, with a failure after the first byte logged once, with the
    request's id and caller, and then re-raised.

    The status line and headers are gone by then, so no error response is
    possible; re-raising is what makes the WSGI server (gunicorn, werkzeug)
    drop the connection without the terminating zero-length chunk, so the
    client sees an incomplete transfer, never a clean end of a truncated file.
    """
    try:
        # yield from: closing this generator (the client went away) closes
        # ``chunks`` too, which returns its connection.
        yield from chunks
    except Exception:
        # Bound again (the view's, passed in): the response may be iterated
        # after the request's teardown has unbound them.
        tokens = request_id_var.set(request_id), identity_var.set(identity)
        try:
            log.exception("export %s failed mid-stream; connection aborted", filename)
        finally:
            request_id_var.reset(tokens[0])
            identity_var.reset(tokens[1])
        raise


def started(chunks: Generator[bytes]) -> Generator[bytes]:
    """``chunks``, its first chunk made now, in the view.

    Before the first byte an error response is still possible: a database
    that is away, or a query it refuses, goes to the app's error handlers
    (a 503 or 500 problem) instead of ending in the WSGI server's HTML 500.
    """
    first = next(chunks, None)

    def resumed() -> Generator[bytes]:
        try:
            if first is not None:
                yield first
            yield from chunks
        finally:
            chunks.close()

    return resumed()


def streaming_download(
    chunks: Generator[bytes], extension: str, mimetype: str
) -> Response:
    """A download streamed as it is produced, through nginx unbuffered."""
    filename = f"events-{utcnow():%Y%m%dT%H%M%SZ}.{extension}"
    request_id = g.get("request_id") or request_id_var.get()
    # The request's span ends with this view; the stream gets one of its own.
    chunks = tracing.span_stream(chunks, f"export {extension} stream")
    chunks = failing_loudly(started(chunks), filename, request_id, identity_var.get())
    # The generator keeps the request context until it ends or is closed.
    response = current_app.response_class(
        stream_with_context(chunks),
        mimetype=mimetype,
    )
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["X-Accel-Buffering"] = "no"
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/export.csv")
@operation("exportEventsCsv", ok=(200, None), scope=Scope.READ, tag=TAG)
def export_csv(query: ExportFilters) -> Response:
    """The caller's events matching the filters, streamed as CSV."""
    chunks = export.csv_chunks(current_identity().account_id, query)
    return streaming_download(chunks, "csv", "text/csv")


@bp.get("/export.ndjson")
@operation("exportEventsNdjson", ok=(200, None), scope=Scope.READ, tag=TAG)
def export_ndjson(query: ExportFilters) -> Response:
    """The caller's events matching the filters, streamed as NDJSON."""
    chunks = export.ndjson_chunks(current_identity().account_id, query)
    return streaming_download(chunks, "ndjson", "application/x-ndjson")

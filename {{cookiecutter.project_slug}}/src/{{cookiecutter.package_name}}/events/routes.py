"""``/api/events``: the edge where request data becomes plain values."""

from __future__ import annotations

import uuid

from flask import Blueprint, request, url_for
from flask.typing import ResponseReturnValue

from ..extensions import db
from ..http.validation import parse
from . import services
from .models import Event
from .pagination import Cursor
from .schemas import EventCreate, EventQuery

bp = Blueprint("events", __name__, url_prefix="/api/events")


@bp.post("")
def create() -> ResponseReturnValue:
    data = parse(EventCreate, request.get_json())
    event = services.create_event(data)
    location = url_for("events.get", event_id=event.id)
    return event.to_dict(), 201, {"Location": location}


@bp.get("/<uuid:event_id>")
def get(event_id: uuid.UUID) -> ResponseReturnValue:
    event = db.get_or_404(Event, event_id, description=f"No event with id {event_id}.")
    return event.to_dict()


@bp.get("")
def index() -> ResponseReturnValue:
    query = parse(EventQuery, request.args.to_dict(), what="query")
    page = services.list_events(
        limit=query.limit,
        after=Cursor.decode(query.cursor) if query.cursor else None,
        owner_id=query.owner_id,
        kind=query.kind,
    )
    return {
        "items": [event.to_dict() for event in page.items],
        "next_cursor": page.next_cursor.encode() if page.next_cursor else None,
    }

"""Event operations on plain values: no request, no ``g``.

Routes read the request and pass what they found; these functions work the
same from a view, a CLI command, a task or a test.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, tuple_

from ..extensions import db
from ..sqltypes import utcnow
from .models import Event
from .pagination import Cursor
from .schemas import EventCreate


@dataclass(frozen=True)
class Page:
    items: Sequence[Event]
    next_cursor: Cursor | None


def create_event(owner_id: int, data: EventCreate) -> Event:
    """Every field of ``data`` is a column of the same name."""
    now = utcnow()
    event = Event(
        **data.model_dump(exclude={"occurred_at"}),
        owner_id=owner_id,
        occurred_at=data.occurred_at or now,
        created_at=now,
    )
    db.session.add(event)
    db.session.commit()
    return event


def get_event(owner_id: int, event_id: uuid.UUID) -> Event | None:
    """The event, if it exists and belongs to ``owner_id``."""
    return db.session.scalar(
        select(Event).where(Event.id == event_id, Event.owner_id == owner_id)
    )


def list_events(
    owner_id: int,
    *,
    limit: int,
    after: Cursor | None = None,
    kind: str | None = None,
) -> Page:
    query = (
        select(Event)
        .where(Event.owner_id == owner_id)
        .order_by(Event.created_at.desc(), Event.id.desc())
    )
    if kind is not None:
        query = query.where(Event.kind == kind)
    if after is not None:
        query = query.where(
            tuple_(Event.created_at, Event.id) < tuple_(after.created_at, after.id)
        )
    # One row more than asked tells whether another page exists.
    rows = db.session.scalars(query.limit(limit + 1)).all()
    items = rows[:limit]
    next_cursor = (
        Cursor(items[-1].created_at, items[-1].id) if len(rows) > limit else None
    )
    return Page(items=items, next_cursor=next_cursor)

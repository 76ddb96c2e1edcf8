"""What clients send (bodies, query strings) and what they get back."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from ..http.schemas import Timestamp
from .models import AMOUNT_PRECISION, AMOUNT_SCALE, KIND_MAX_LENGTH

MAX_PAGE_SIZE = 100
# Instants clients may send, in UTC: four-digit years, which every layer
# holds and writes alike (Python's datetime, PostgreSQL, SQLite's text, the
# exports' formats). Anything outside, or an offset that pushes a time past
# year 9999 or before year 1000, is a 400, not an overflow in storage.
EARLIEST = datetime(1000, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)

Kind = Annotated[
    str,
    Field(min_length=1, max_length=KIND_MAX_LENGTH, pattern=r"^[a-z0-9][a-z0-9_.-]*$"),
]


def in_range(value: datetime) -> datetime:
    """``value`` in UTC, if it lies between ``EARLIEST`` and ``LATEST``."""
    try:
        utc = value.astimezone(UTC)
    except (OverflowError, ValueError):
        utc = None
    if utc is None or not EARLIEST <= utc <= LATEST:
        raise ValueError(
            f"must lie between {EARLIEST.isoformat()} and {LATEST.isoformat()} in UTC"
        )
    return utc


Instant = Annotated[AwareDatetime, AfterValidator(in_range)]


class EventCreate(BaseModel):
    """The owner is the caller's account, never a field of the body."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    kind: Kind
    amount: Annotated[
        Decimal,
        Field(
            max_digits=AMOUNT_PRECISION,
            decimal_places=AMOUNT_SCALE,
            allow_inf_nan=False,
        ),
    ]
    payload: Annotated[str, Field(max_length=10_000)] = ""
    occurred_at: Instant | None = None


class EventQuery(BaseModel):
    """Query string of the list endpoint; values arrive as strings."""

    model_config = ConfigDict(extra="forbid")

    limit: Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE)] = 50
    cursor: str | None = None
    kind: Kind | None = None


class ExportFilters(BaseModel):
    """Query string of the export endpoints; values arrive as strings."""

    model_config = ConfigDict(extra="forbid")

    since: Instant | None = None
    until: Instant | None = None
    kind: Kind | None = None

    @field_validator("until")
    @classmethod
    def _after_since(cls, until: datetime | None, info: ValidationInfo) -> Any:
        since = info.data.get("since")
        if until is not None and since is not None and until <= since:
            raise ValueError("must be later than since")
        return until


class EventOut(BaseModel):
    """An event as the API answers it: amounts as exact strings."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    owner_id: int
    kind: str
    amount: Decimal
    payload: str
    occurred_at: Timestamp
    created_at: Timestamp


class EventPage(BaseModel):
    """One page of a list; ``next_cursor`` asks for the next."""

    items: list[EventOut]
    next_cursor: str | None

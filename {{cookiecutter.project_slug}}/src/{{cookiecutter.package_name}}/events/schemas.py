"""Validation of what clients send: bodies and query strings."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from .models import AMOUNT_PRECISION, AMOUNT_SCALE, KIND_MAX_LENGTH

MAX_PAGE_SIZE = 100

Kind = Annotated[
    str,
    Field(min_length=1, max_length=KIND_MAX_LENGTH, pattern=r"^[a-z0-9][a-z0-9_.-]*$"),
]


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
    occurred_at: AwareDatetime | None = None


class EventQuery(BaseModel):
    """Query string of the list endpoint; values arrive as strings."""

    model_config = ConfigDict(extra="forbid")

    limit: Annotated[int, Field(ge=1, le=MAX_PAGE_SIZE)] = 50
    cursor: str | None = None
    kind: Kind | None = None


class ExportFilters(BaseModel):
    """Query string of the export endpoints; values arrive as strings."""

    model_config = ConfigDict(extra="forbid")

    since: AwareDatetime | None = None
    until: AwareDatetime | None = None
    kind: Kind | None = None

    @field_validator("until")
    @classmethod
    def _after_since(cls, until: datetime | None, info: ValidationInfo) -> Any:
        since = info.data.get("since")
        if until is not None and since is not None and until <= since:
            raise ValueError("must be later than since")
        return until

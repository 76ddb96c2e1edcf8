"""The ``events`` table."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, Numeric, String, Text, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from ..sqltypes import UTCDateTime, utcnow

AMOUNT_PRECISION = 12
AMOUNT_SCALE = 2
KIND_MAX_LENGTH = 64


class Event(db.Model):  # type: ignore[name-defined]
    __tablename__ = "events"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    kind: Mapped[str] = mapped_column(String(KIND_MAX_LENGTH))
    amount: Mapped[Decimal] = mapped_column(Numeric(AMOUNT_PRECISION, AMOUNT_SCALE))
    payload: Mapped[str] = mapped_column(Text, default="")
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    # Lists and exports read one owner's events by (created_at, id),
    # optionally narrowed to one kind: one index per access path.
    __table_args__ = (
        Index("ix_events_created_at_id", "created_at", "id"),
        Index("ix_events_owner_id_created_at_id", "owner_id", "created_at", "id"),
        Index(
            "ix_events_owner_id_kind_created_at_id",
            "owner_id",
            "kind",
            "created_at",
            "id",
        ),
    )

"""The ``jobs`` table: what was asked, and how far it got.

The row is written before the task is sent, so a client can always ask
for its status, and a job whose message never reached the broker is marked
failed rather than left pending forever. ``updated_at`` moves on every
change (sent, started, re-sent, finished): the reaper (``reaper.py``) finds
unfinished jobs by it, and counts its re-sends in ``requeues``.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from ..extensions import db
from ..sqltypes import UTCDateTime, utcnow
from .errors import public


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED)


class Job(db.Model):  # type: ignore[name-defined]
    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"))
    kind: Mapped[str] = mapped_column(String(64))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    requeues: Mapped[int] = mapped_column(Integer, default=0)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # A JobError code; the client-facing message is looked up from it.
    error_code: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow
    )
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    # The purge task deletes finished jobs by age; the reaper finds
    # unfinished ones by status and age; owners read their own.
    __table_args__ = (
        Index("ix_jobs_finished_at", "finished_at"),
        Index("ix_jobs_status_updated_at", "status", "updated_at"),
        Index("ix_jobs_owner_id", "owner_id"),
    )

    @property
    def error(self) -> dict[str, str] | None:
        """What a client may read of the failure: never the exception."""
        return public(self.error_code)

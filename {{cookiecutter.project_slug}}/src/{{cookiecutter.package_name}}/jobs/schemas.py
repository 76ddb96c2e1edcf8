"""What the jobs API answers."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict

from ..http.schemas import Timestamp
from .models import JobStatus


class JobFailure(BaseModel):
    """Why a job failed, as a stable code and a message for people."""

    code: str
    message: str


class JobOut(BaseModel):
    """A job's state; ``error`` says what failed, never how."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    kind: str
    status: JobStatus
    params: dict[str, Any]
    attempts: int
    result: dict[str, Any] | None
    error: JobFailure | None
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None


class JobAccepted(JobOut):
    """A job just submitted; poll ``status_url`` (also in ``Location``)."""

    status_url: str


class OwnerSummaryRequest(BaseModel):
    """Nothing to choose yet: the summary is of the caller's own events."""

    model_config = ConfigDict(extra="forbid")

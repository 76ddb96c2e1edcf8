"""Keyset pagination over ``(created_at, id)``, newest first.

A cursor names the last row a client saw, not an offset, so rows inserted
while a client pages (they sort before the first page) never shift or repeat
the rows it has yet to read, and every page is one index range scan.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime

from ..http.problems import APIError
from .schemas import in_range


@dataclass(frozen=True)
class Cursor:
    created_at: datetime
    id: uuid.UUID

    def encode(self) -> str:
        raw = f"{self.created_at.isoformat()}|{self.id.hex}".encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        try:
            padded = token + "=" * (-len(token) % 4)
            raw = base64.urlsafe_b64decode(padded.encode("ascii")).decode()
            created_at, _, event_id = raw.partition("|")
            cursor = cls(datetime.fromisoformat(created_at), uuid.UUID(hex=event_id))
            if cursor.created_at.tzinfo is None:
                raise ValueError("a cursor's time has an offset")
            in_range(cursor.created_at)
        except (ValueError, UnicodeError, binascii.Error):
            raise APIError(
                400, "The cursor is invalid.", errors={"cursor": ["invalid cursor"]}
            ) from None
        return cursor

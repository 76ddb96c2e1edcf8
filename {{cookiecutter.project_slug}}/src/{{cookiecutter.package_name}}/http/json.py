"""JSON provider: exact decimals, UUIDs and ISO 8601 datetimes."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from flask.json.provider import DefaultJSONProvider


class _Encoder(json.JSONEncoder):
    def default(self, o: Any) -> Any:
        if isinstance(o, Decimal):
            # A string keeps every digit; a float would round 0.1 + 0.2.
            return str(o)
        if isinstance(o, UUID):
            return str(o)
        if isinstance(o, datetime | date):
            return o.isoformat()
        return super().default(o)


class JSONProvider(DefaultJSONProvider):
    """Flask's provider, with exact types instead of its lossy defaults
    (Flask writes datetimes as RFC 822 strings and Decimals via ``str`` only
    by accident of its fallback). Keys keep the order the code wrote them in."""

    sort_keys = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs.setdefault("ensure_ascii", self.ensure_ascii)
        kwargs.setdefault("sort_keys", self.sort_keys)
        kwargs.setdefault("cls", _Encoder)
        return json.dumps(obj, **kwargs)

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        # Numbers with a fraction arrive as Decimal: 19.99 stays 19.99.
        kwargs.setdefault("parse_float", Decimal)
        try:
            return json.loads(s, **kwargs)
        except RecursionError:
            # Nesting deeper than the parser's stack: a ValueError is what
            # Flask turns into a 400 for a body it cannot decode.
            raise ValueError("JSON nested too deeply") from None

"""How each column type is written in the export files: the same text
whether Python writes it from the typed value or PostgreSQL or SQLite from
the column (``Format``); ``format_of`` picks a column's by its type in the
model. A type without an entry in ``FORMATS`` is written as its text: give
it an entry if that text differs between the databases."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import date, datetime
from json.encoder import encode_basestring as json_string
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Date,
    Float,
    Integer,
    Numeric,
    String,
    Uuid,
    case,
    cast,
    false,
    func,
    literal_column,
    true,
)
from sqlalchemy import type_coerce as as_type
from sqlalchemy.sql import ColumnElement
from sqlalchemy.types import TypeEngine

from ..sqltypes import UTCDateTime

# Timestamps are written in UTC as ISO 8601 with this offset, the fraction of
# a second without trailing zeros (none for a whole second): the text
# PostgreSQL itself writes, so the database spends no to_char on them.
UTC_OFFSET = "+00:00"

Sql = Callable[[Any], Any]


@dataclass(frozen=True)
class Format:
    """How values of one column type become a file's field: ``python`` from
    the typed value, ``postgresql`` and ``sqlite`` as SQL of the column,
    all three the same text in CSV. ``json`` encodes the field into an
    NDJSON line (``None``: written as it is, a number). With ``typed_json``
    NDJSON reads the typed value instead of the SQL text (booleans)."""

    python: Callable[[Any], Any]
    postgresql: Sql
    sqlite: Sql
    json: Callable[[Any], Any] | None = json_string
    typed_json: bool = False
    free_text: bool = False
    nullable: bool = False


def _unchanged(value: Any) -> Any:
    return value


def own_text(column: Any) -> Any:
    """The column as its type's own text: what COPY writes for it anyway."""
    return cast(column, String)


def _timestamp(value: datetime) -> str:
    """A UTC datetime; ``isoformat`` always writes four-digit years."""
    text = value.replace(tzinfo=None).isoformat(timespec="microseconds")
    return text.rstrip("0").rstrip(".") + UTC_OFFSET


def _pg_timestamp(column: Any) -> Any:
    """PostgreSQL's text of the UTC time in the ISO DateStyle (which the
    connection sets: config.engine_options), with ``T`` for the space."""
    utc = column.op("AT TIME ZONE")(literal_column("'UTC'"))
    return func.replace(cast(utc, String), " ", "T") + UTC_OFFSET


def _sqlite_timestamp(column: Any) -> Any:
    """SQLite holds UTC timestamps as ``YYYY-MM-DD HH:MM:SS.ffffff``;
    trailing zeros of the fraction go, and its dot when nothing is left."""
    stored = as_type(column, String)
    trimmed = func.rtrim(func.rtrim(stored, "0"), ".")
    text = case((func.instr(stored, ".") > 0, trimmed), else_=stored)
    return func.replace(text, " ", "T") + UTC_OFFSET


def _sqlite_uuid(column: Any) -> Any:
    """SQLite holds UUIDs as 32 hex digits."""
    hex_id = func.lower(as_type(column, String))
    dashed: ColumnElement[Any] = func.substr(hex_id, 1, 8)
    for start, length in ((9, 4), (13, 4), (17, 4), (21, 12)):
        dashed = dashed + "-" + func.substr(hex_id, start, length)
    return as_type(dashed, String)


def _boolean_text(column: Any) -> Any:
    """What ``str`` writes for a bool; NULL stays NULL."""
    return case((column.is_(true()), "True"), (column.is_(false()), "False"))


def _sqlite_decimal(scale: int) -> Sql:
    """SQLite holds decimals as numbers: a double holds up to 15 digits
    closely enough that rounding to the column's scale gives them back."""

    def text(column: Any) -> Any:
        # printf writes NULL as zero: NULL stays NULL.
        printed = func.printf(f"%.{scale}f", as_type(column, Float))
        return as_type(case((column.is_not(None), printed)), String)

    return text


JSON_BOOLEANS = {True: "true", False: "false"}
TEXT = Format(str, own_text, own_text)
FORMATS: dict[type[TypeEngine[Any]], Format] = {
    # The most specific type first: the first match wins.
    UTCDateTime: Format(_timestamp, _pg_timestamp, _sqlite_timestamp),
    Uuid: Format(str, own_text, _sqlite_uuid),
    Boolean: Format(
        _unchanged,
        _boolean_text,
        _boolean_text,
        json=JSON_BOOLEANS.__getitem__,
        typed_json=True,
    ),
    Integer: Format(_unchanged, _unchanged, _unchanged, json=None),
    # Floats print differently in each database: written as their text.
    Float: TEXT,
    String: Format(_unchanged, _unchanged, _unchanged, free_text=True),
    Date: Format(
        date.isoformat,
        lambda column: func.to_char(column, "YYYY-MM-DD"),
        lambda column: as_type(column, String),
    ),
}


def format_of(column: Column[Any]) -> Format:
    kind = column.type
    if isinstance(kind, Numeric) and not isinstance(kind, Float) and kind.scale:
        found = Format(str, own_text, _sqlite_decimal(kind.scale))
    else:
        found = next((f for t, f in FORMATS.items() if isinstance(kind, t)), TEXT)
    return _nullable(found) if column.nullable else found


def _or_null(write: Callable[[Any], Any], null: Any) -> Callable[[Any], Any]:
    return lambda value: null if value is None else write(value)


def _nullable(found: Format) -> Format:
    """``found`` for a column that may hold NULL: ``None`` in Python,
    ``null`` in NDJSON, an empty cell in CSV (``_text_query``)."""
    return replace(
        found,
        python=_or_null(found.python, None),
        json=_or_null(found.json or _unchanged, "null"),
        nullable=True,
    )

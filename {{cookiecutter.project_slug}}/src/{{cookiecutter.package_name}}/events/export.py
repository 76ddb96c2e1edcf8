"""Streaming exports of events as CSV or NDJSON, at any size in flat memory.

The view validates and returns a generator; nothing touches the database
until the server starts sending. The generator opens its own connection and
a server-side cursor, reads batches, and writes each batch as one chunk.
Closing the generator (the export finished, or the client went away) leaves
the ``with`` block: the cursor is closed, the transaction rolled back and the
connection returned to the pool.

On PostgreSQL, CSV comes straight from ``COPY ... TO STDOUT``: the server
formats the rows, Python only forwards bytes. Every other case formats rows
in Python, in the same format, so a file does not depend on the database.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, String, cast, func, literal_column, select
from sqlalchemy.engine import Connection, Row

from ..extensions import db
from .models import Event
from .schemas import ExportFilters

COLUMNS = ("id", "owner_id", "kind", "amount", "payload", "occurred_at", "created_at")
BATCH_ROWS = 5000
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%f+00:00"
# The same format, spelled for PostgreSQL's to_char.
PG_TIMESTAMP_FORMAT = 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'


def export_query(filters: ExportFilters) -> Select[Any]:
    """Oldest first by (created_at, id), the index's order."""
    table = Event.__table__
    query = select(*(table.c[name] for name in COLUMNS)).order_by(
        table.c.created_at, table.c.id
    )
    if filters.since is not None:
        query = query.where(table.c.created_at >= filters.since)
    if filters.until is not None:
        query = query.where(table.c.created_at < filters.until)
    if filters.kind is not None:
        query = query.where(table.c.kind == filters.kind)
    if filters.owner_id is not None:
        query = query.where(table.c.owner_id == filters.owner_id)
    return query


def _stream(connection: Connection, query: Select[Any]) -> Iterator[Sequence[Row[Any]]]:
    streaming = connection.execution_options(
        stream_results=True, max_row_buffer=BATCH_ROWS
    )
    # Closing the result closes the server-side cursor, also when the
    # generator is closed early. partitions() needs a size: without one it
    # reads the whole result.
    with streaming.execute(query) as result:
        yield from result.partitions(BATCH_ROWS)


def _timestamp(value: datetime) -> str:
    return value.strftime(TIMESTAMP_FORMAT)


def _csv_fields(row: Sequence[Any]) -> tuple[Any, ...]:
    event_id, owner_id, kind, amount, payload, occurred_at, created_at = row
    return (
        str(event_id),
        owner_id,
        kind,
        str(amount),
        payload,
        _timestamp(occurred_at),
        _timestamp(created_at),
    )


def _json_line(row: Sequence[Any]) -> str:
    event_id, owner_id, kind, amount, payload, occurred_at, created_at = row
    record = {
        "id": str(event_id),
        "owner_id": owner_id,
        "kind": kind,
        "amount": str(amount),
        "payload": payload,
        "occurred_at": _timestamp(occurred_at),
        "created_at": _timestamp(created_at),
    }
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"


def _copy_query(filters: ExportFilters) -> Select[Any]:
    """The export query with every column formatted by PostgreSQL itself."""
    base = export_query(filters).subquery()

    def stamp(column: Any) -> Any:
        utc = column.op("AT TIME ZONE")(literal_column("'UTC'"))
        return func.to_char(utc, PG_TIMESTAMP_FORMAT)

    return select(
        cast(base.c.id, String),
        base.c.owner_id,
        base.c.kind,
        cast(base.c.amount, String),
        base.c.payload,
        stamp(base.c.occurred_at),
        stamp(base.c.created_at),
    ).order_by(base.c.created_at, base.c.id)


def _copy_csv(connection: Connection, filters: ExportFilters) -> Iterator[bytes]:
    query = _copy_query(filters).compile(
        dialect=connection.dialect, compile_kwargs={"literal_binds": True}
    )
    # With a NULL marker other than the empty string, COPY quotes what
    # Python's csv module quotes: an empty payload stays unquoted.
    statement = f"COPY ({query}) TO STDOUT WITH (FORMAT csv, NULL '\\N')"
    raw: Any = connection.connection.driver_connection  # psycopg's, untyped here
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for data in copy:
            yield bytes(data)


def csv_chunks(filters: ExportFilters) -> Iterator[bytes]:
    """The CSV file, header first, one chunk per batch of rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    yield buffer.getvalue().encode()
    with db.engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            yield from _copy_csv(connection, filters)
            return
        for rows in _stream(connection, export_query(filters)):
            buffer.seek(0)
            buffer.truncate()
            writer.writerows(_csv_fields(row) for row in rows)
            yield buffer.getvalue().encode()


def ndjson_chunks(filters: ExportFilters) -> Iterator[bytes]:
    """One JSON object per line, one chunk per batch of rows."""
    with db.engine.connect() as connection:
        for rows in _stream(connection, export_query(filters)):
            yield "".join(_json_line(row) for row in rows).encode()

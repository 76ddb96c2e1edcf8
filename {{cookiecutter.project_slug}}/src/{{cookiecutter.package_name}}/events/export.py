"""Streaming exports of events as CSV or NDJSON, at any size in flat memory.

The columns are the API's: the fields of ``EventOut``, in its order, each
written as its column type in the ``events`` table says (``formats.py``). A
new column of the model that the response model shows appears in every
export by itself.

The view validates and makes the first chunk, which opens the generator's
own connection and starts its query: a database that is away or refuses the
query fails the request with an ordinary error response, before any byte is
sent. The generator then reads batches through a server-side cursor and
writes each batch as one chunk; the header goes out with the first batch.
Closing the generator (the export finished, or the client went away) leaves
the ``with`` block: the cursor is closed, the transaction rolled back and the
connection returned to the pool.

The database formats every column as the file's text (``_text_query``):
Python makes no UUID, Decimal or datetime object per row. On PostgreSQL, CSV
comes straight from ``COPY ... TO STDOUT`` of that query, so Python only
forwards bytes; every other case writes the query's rows with ``csv`` or
``json``. Either way a file is the same bytes whatever the database. NULL is
an empty CSV cell and ``null`` in NDJSON.

CSV files are opened by spreadsheets, which run a cell starting with ``=``,
``+``, ``-``, ``@``, a tab or a carriage return as a formula (OWASP's "CSV
injection"). In CSV exports such a cell of a free-text column (a ``String``
or ``Text`` column: ``SPREADSHEET_TEXT``) gets a leading single quote, which
makes the spreadsheet show it as text; the database adds it in the same
query (``_neutralized``), the Python path with ``_spreadsheet_safe``.
Columns that are numbers, UUIDs or timestamps by construction are exempt, so
a negative amount stays a number. NDJSON is not a spreadsheet format and is
untouched.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Generator, Iterator, Sequence
from contextlib import closing
from json.encoder import encode_basestring as json_string
from typing import Any

from sqlalchemy import (
    Select,
    String,
    and_,
    case,
    cast,
    func,
    literal,
    select,
)
from sqlalchemy.engine import Connection, Row

from .. import tracing
from ..database import unhurried
from ..extensions import db
from .formats import Format, format_of, own_text
from .models import Event
from .schemas import EventOut, ExportFilters

BATCH_ROWS = 5000
# COPY hands over one row at a time; chunks this large keep the number of
# writes to the client (and chunk headers) small.
COPY_CHUNK_BYTES = 64 * 1024
# The first characters that make a spreadsheet read a cell as a formula;
# such cells of free-text columns get FORMULA_ESCAPE in front in CSV files.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
FORMULA_ESCAPE = "'"


def _exported_columns() -> dict[str, Format]:
    table = Event.__table__
    missing = [name for name in EventOut.model_fields if name not in table.c]
    if missing:
        raise LookupError(
            f"EventOut fields {missing} are not columns of {table.name}: "
            "exports write the table's columns"
        )
    return {name: format_of(table.c[name]) for name in EventOut.model_fields}


# The API's fields are the export's columns, in the same order.
EXPORTED = _exported_columns()
COLUMNS = tuple(EXPORTED)
SPREADSHEET_TEXT = frozenset(name for name, f in EXPORTED.items() if f.free_text)
PYTHON_FIELDS = tuple(f.python for f in EXPORTED.values())
JSON_ENCODERS = tuple(f.json for f in EXPORTED.values())
JSON_LINE = "{" + ",".join(f"{json_string(name)}:%s" for name in COLUMNS) + "}\n"


def export_query(owner_id: int, filters: ExportFilters) -> Select[Any]:
    """``owner_id``'s events, oldest first by (created_at, id), the index's order."""
    table = Event.__table__
    query = (
        select(*(table.c[name] for name in COLUMNS))
        .where(table.c.owner_id == owner_id)
        .order_by(table.c.created_at, table.c.id)
    )
    if filters.since is not None:
        query = query.where(table.c.created_at >= filters.since)
    if filters.until is not None:
        query = query.where(table.c.created_at < filters.until)
    if filters.kind is not None:
        query = query.where(table.c.kind == filters.kind)
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


def _csv_fields(row: Sequence[Any]) -> tuple[Any, ...]:
    """A row of ``export_query`` (typed values) as the file's fields."""
    return tuple(write(value) for write, value in zip(PYTHON_FIELDS, row, strict=True))


def _spreadsheet_safe(fields: Sequence[Any]) -> tuple[Any, ...]:
    """A row of file fields with each formula-like cell of a free-text column
    neutralized, as the database's ``_neutralized`` does."""
    return tuple(
        FORMULA_ESCAPE + value
        if name in SPREADSHEET_TEXT
        and isinstance(value, str)
        and value.startswith(FORMULA_STARTS)
        else value
        for name, value in zip(COLUMNS, fields, strict=True)
    )


# The code point of a text's first character: one integer, no substring.
FIRST_CODE_POINT = {"postgresql": func.ascii, "sqlite": func.unicode}


FORMULA_CODE_POINTS = sorted(map(ord, FORMULA_STARTS))


def _neutralized(dialect: str, column: Any) -> Any:
    """``column`` with FORMULA_ESCAPE in front when it starts like a
    formula: the SQL twin of ``_spreadsheet_safe``. Most text starts past
    every formula character (a letter): one comparison settles it."""
    first = FIRST_CODE_POINT[dialect](column)
    formula = and_(first <= FORMULA_CODE_POINTS[-1], first.in_(FORMULA_CODE_POINTS))
    escaped = literal(FORMULA_ESCAPE, String) + column
    return case((formula, escaped), else_=column)


def _copy_quotes(value: Any) -> bool:
    """Whether COPY quotes ``value`` where Python's csv module does not: a
    carriage return (csv only quotes the line terminator, ``\\n``) or the
    NULL marker ``\\N``."""
    return isinstance(value, str) and ("\r" in value or value == "\\N")


def _csv_line(fields: Sequence[Any]) -> str:
    """The line COPY writes for ``fields``; for the rows ``_copy_quotes``."""
    cells = []
    for value in fields:
        text = str(value)
        if _copy_quotes(text) or any(c in text for c in ',"\n'):
            text = '"' + text.replace('"', '""') + '"'
        cells.append(text)
    return ",".join(cells) + "\n"


def _write_csv(writer: Any, buffer: io.StringIO, rows: Sequence[Any]) -> None:
    """Write ``rows`` as COPY would onto the empty ``buffer`` (``writer``'s):
    in one go, unless the text shows a row it would quote differently."""
    writer.writerows(rows)
    text = buffer.getvalue()
    if "\r" not in text and "\\N" not in text:
        return
    buffer.seek(0)
    buffer.truncate()
    for row in rows:
        if any(map(_copy_quotes, row)):
            buffer.write(_csv_line(row))
        else:
            writer.writerow(row)


def _ndjson(rows: Sequence[Sequence[Any]]) -> str:
    """The lines ``json.dumps(dict(zip(COLUMNS, fields)), ensure_ascii=False,
    separators=(",", ":"))`` writes for ``rows`` of fields, built directly,
    a column at a time: a third of the time. ``json_string`` is the string
    encoder json.dumps itself uses."""
    if not rows:
        return ""
    encoded = [
        values if encode is None else map(encode, values)
        for encode, values in zip(JSON_ENCODERS, zip(*rows, strict=True), strict=True)
    ]
    return "".join(map(JSON_LINE.__mod__, zip(*encoded, strict=True)))


def _text_query(
    dialect: str,
    owner_id: int,
    filters: ExportFilters,
    *,
    spreadsheet: bool,
    by_copy: bool = False,
) -> Select[Any]:
    """The export query with every column already as the file writes it,
    formatted by the database ``dialect`` (``postgresql`` or ``sqlite``);
    for a ``spreadsheet`` (CSV), with formula-like free text neutralized,
    else (NDJSON) with ``typed_json`` columns as they are. For COPY
    (``by_copy``), columns written as their type's own text stay typed:
    COPY writes that text itself, and a cast would only copy it once more
    (a fifth of the export's time)."""
    base = export_query(owner_id, filters).subquery()
    columns = []
    for name, found in EXPORTED.items():
        column: Any = base.c[name]
        write = getattr(found, dialect)
        if by_copy and write is own_text:
            pass
        elif spreadsheet or not found.typed_json:
            column = write(column)
        if spreadsheet and found.nullable:
            # COPY writes NULL as its marker; Python's csv, as an empty cell.
            column = func.coalesce(cast(column, String), "")
        if spreadsheet and found.free_text:
            column = _neutralized(dialect, column)
        columns.append(column)
    return select(*columns).order_by(base.c.created_at, base.c.id)


def _copy_query(owner_id: int, filters: ExportFilters) -> Select[Any]:
    return _text_query("postgresql", owner_id, filters, spreadsheet=True, by_copy=True)


def _copy_csv(
    connection: Connection, owner_id: int, filters: ExportFilters
) -> Generator[bytes]:
    query = _copy_query(owner_id, filters).compile(
        dialect=connection.dialect, compile_kwargs={"literal_binds": True}
    )
    # With a NULL marker other than the empty string, COPY quotes what
    # Python's csv module quotes: an empty payload stays unquoted.
    statement = f"COPY ({query}) TO STDOUT WITH (FORMAT csv, NULL '\\N')"
    raw: Any = connection.connection.driver_connection  # psycopg's, untyped here
    chunk = bytearray()
    with (
        tracing.database_span("COPY events", "postgresql", "COPY"),
        raw.cursor() as cursor,
        cursor.copy(statement) as copy,
    ):
        for data in copy:
            chunk += data
            if len(chunk) >= COPY_CHUNK_BYTES:
                yield bytes(chunk)
                chunk.clear()
    if chunk:
        yield bytes(chunk)


def _text_rows(
    connection: Connection,
    owner_id: int,
    filters: ExportFilters,
    *,
    spreadsheet: bool,
) -> Iterator[Sequence[Any]]:
    """Batches of rows as the file writes them: formatted by the database
    when it can, else by Python from typed values. For a ``spreadsheet``
    (CSV), formula-like free text is neutralized."""
    dialect = connection.dialect.name
    if dialect in ("postgresql", "sqlite"):
        query = _text_query(dialect, owner_id, filters, spreadsheet=spreadsheet)
        yield from _stream(connection, query)
        return
    for rows in _stream(connection, export_query(owner_id, filters)):
        fields = [_csv_fields(row) for row in rows]
        yield [_spreadsheet_safe(row) for row in fields] if spreadsheet else fields


def csv_chunks(owner_id: int, filters: ExportFilters) -> Generator[bytes]:
    """``owner_id``'s CSV file, one chunk per batch of rows, the header
    with the first."""
    with db.engine.connect() as connection, unhurried(connection):
        body = (
            _copy_csv(connection, owner_id, filters)
            if connection.dialect.name == "postgresql"
            else _csv_batches(connection, owner_id, filters)
        )
        with closing(body):
            yield _csv_line(COLUMNS).encode() + next(body, b"")
            yield from body


def _csv_batches(
    connection: Connection, owner_id: int, filters: ExportFilters
) -> Generator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    for rows in _text_rows(connection, owner_id, filters, spreadsheet=True):
        buffer.seek(0)
        buffer.truncate()
        _write_csv(writer, buffer, rows)
        yield buffer.getvalue().encode()


def ndjson_chunks(owner_id: int, filters: ExportFilters) -> Generator[bytes]:
    """``owner_id``'s events, one JSON object per line, one chunk per batch."""
    with db.engine.connect() as connection, unhurried(connection):
        for rows in _text_rows(connection, owner_id, filters, spreadsheet=False):
            yield _ndjson(rows).encode()

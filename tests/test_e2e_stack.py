"""The default bake, run the way deploy/README.md ships it: gunicorn with
deploy/gunicorn.conf.py, a real Celery worker on Redis, PostgreSQL, and nginx
with deploy/nginx/nginx.conf in front. Every request goes through nginx.

The unit tests of a bake run the app in-process; only this stack shows that
the pieces agree with each other: request ids survive nginx, streamed exports
arrive whole, X-Accel-Redirect downloads are consumed by nginx, and a client
that hangs up mid-stream gives its database connection back.
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
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from conftest import POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, require_service
from nginx_support import (
    CONF,
    free_port,
    mime_types,
    render_for_prefix,
    require_nginx,
)
from process_support import Service, start
from template_support import bake_into, clean_env, defaults, require_python, run

pytestmark = pytest.mark.slow

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
SEED_ROWS = 50_000
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


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


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

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> Response:
        """One request through nginx on a fresh connection; no status raises,
        so a test can assert on 4xx answers too."""
        all_headers = dict(headers or {})
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


def wait_for(
    condition: Callable[[], Any], seconds: float, what: str, interval: float = 0.2
) -> Any:
    """Poll ``condition`` until it returns something truthy, or fail."""
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {seconds}s waiting for {what} (last: {last!r})")


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


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    cookiecutter_config: Path,
    uv_cache_dir: Path,
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
    env = clean_env(
        APP_ENV="production",
        SECRET_KEY=secrets.token_urlsafe(48)[:48],
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
        PYTHONUNBUFFERED="1",
    )

    conf_dir = prefix / "conf"
    conf_dir.mkdir(parents=True)
    shutil.copy(mime_types(nginx), conf_dir / "mime.types")
    conf = conf_dir / "nginx.conf"
    conf.write_text(
        render_for_prefix(
            (project / CONF).read_text(encoding="utf-8"),
            prefix,
            nginx_port,
            gunicorn_port,
        ),
        encoding="utf-8",
    )
    (prefix / "exports").chmod(0o755)  # written by the worker, read by nginx

    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
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
        for command in (
            [*flask, "db", "upgrade"],
            [*flask, "seed", "--rows", str(SEED_ROWS), "--seed", "1"],
        ):
            result = run(command, project, env)
            assert result.returncode == 0, f"{command}\n{result.stdout}"

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
        wait_for(
            lambda: healthy(stack, services), STARTUP_SECONDS, "/healthz via nginx"
        )
        wait_for(lambda: worker_ready(services[1].log), STARTUP_SECONDS, "celery ready")
        yield stack
    finally:
        for service in reversed(services):
            service.stop()
        with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(database)
                )
            )
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


def database_rows(stack: Stack) -> tuple[int, str, Decimal]:
    """Row count, sha256 of the ids in export order, and the sum of amounts,
    straight from PostgreSQL."""
    with psycopg.connect(stack.database_url) as connection:
        rows = connection.execute(
            "SELECT id::text, amount FROM events ORDER BY created_at, id"
        ).fetchall()
        (count,) = connection.execute("SELECT count(*) FROM events").fetchone() or (0,)
    ids = hashlib.sha256("\n".join(row[0] for row in rows).encode()).hexdigest()
    return count, ids, sum((row[1] for row in rows), Decimal(0))


def export_summary(records: list[dict[str, str]]) -> tuple[int, str, Decimal]:
    ids = hashlib.sha256("\n".join(r["id"] for r in records).encode()).hexdigest()
    return len(records), ids, sum((Decimal(r["amount"]) for r in records), Decimal(0))


def test_json_api_round_trip_keeps_request_ids(stack: Stack) -> None:
    """A created event reads back the same through nginx, and every answer
    carries exactly one X-Request-ID: the client's when well formed."""
    sent = {"owner_id": 7, "kind": "purchase", "amount": "19.99", "payload": "e2e"}
    created = stack.request(
        "POST", "/api/events", sent, headers={"X-Request-ID": "e2e-create.1:a"}
    )
    assert created.status == 201, created.body
    assert created.headers.get_all("X-Request-ID") == ["e2e-create.1:a"]
    event = created.json()
    assert {key: event[key] for key in sent} == sent

    location = created.headers["Location"]
    assert location.endswith(f"/api/events/{event['id']}"), location
    fetched = stack.request("GET", f"/api/events/{event['id']}")
    assert fetched.status == 200, fetched.body
    assert fetched.json() == event
    generated = fetched.headers.get_all("X-Request-ID") or []
    assert len(generated) == 1
    assert REQUEST_ID.fullmatch(generated[0]), generated

    # An id that could forge log lines is replaced, not echoed.
    forged = stack.request(
        "GET", f"/api/events/{event['id']}", headers={"X-Request-ID": "a b"}
    )
    assert forged.status == 200
    replaced = forged.headers.get_all("X-Request-ID") or []
    assert len(replaced) == 1
    assert replaced[0] != "a b"
    assert REQUEST_ID.fullmatch(replaced[0]), replaced


def test_streamed_exports_are_complete(stack: Stack) -> None:
    """Both streaming formats carry every row, in export order, with the
    amounts the database holds."""
    expected = database_rows(stack)
    assert expected[0] > SEED_ROWS - 1, expected

    answer = stack.request("GET", "/api/events/export.csv")
    assert answer.status == 200, answer.body[:500]
    assert answer.headers["Content-Type"].startswith("text/csv")
    reader = csv.DictReader(io.StringIO(answer.body.decode()))
    assert reader.fieldnames == EXPORT_COLUMNS
    assert export_summary(list(reader)) == expected

    answer = stack.request("GET", "/api/events/export.ndjson")
    assert answer.status == 200, answer.body[:500]
    assert answer.headers["Content-Type"].startswith("application/x-ndjson")
    lines = answer.body.decode().splitlines()
    assert export_summary([json.loads(line) for line in lines]) == expected


def finished_export(stack: Stack) -> dict[str, Any]:
    """Start a CSV export through nginx and poll it until the worker is done."""
    started = stack.request("POST", "/api/exports", {"format": "csv"})
    assert started.status == 202, started.body
    status_url = started.json()["status_url"]

    def finished() -> dict[str, Any] | None:
        job = stack.request("GET", status_url).json()
        assert job["status"] != "failed", job
        return job if job["status"] == "succeeded" else None

    job: dict[str, Any] = wait_for(finished, 120, "the export job", interval=0.5)
    return job


def test_background_export_is_served_by_nginx(stack: Stack) -> None:
    """The worker writes the file; the app's download answer is an
    X-Accel-Redirect that nginx consumes, so the client gets the file itself
    and never the header, and the internal location stays unreachable."""
    job = finished_export(stack)
    result = job["result"]
    path = stack.export_dir / result["filename"]
    # nginx's workers run as another user than the Celery worker: the file
    # as written must be readable to them (no chmod here).
    on_disk = path.read_bytes()
    assert len(on_disk) == result["size"]
    assert hashlib.sha256(on_disk).hexdigest() == result["sha256"]

    download = stack.request("GET", job["download_url"])
    assert download.status == 200, download.body[:500]
    assert download.body == on_disk
    assert hashlib.sha256(download.body).hexdigest() == result["sha256"]
    assert "X-Accel-Redirect" not in download.headers
    assert "X-Sendfile" not in download.headers
    assert download.headers["Content-Type"].startswith("text/csv")
    assert download.headers["Content-Disposition"].startswith("attachment;")
    assert len(download.headers.get_all("X-Request-ID") or []) == 1

    direct = stack.request("GET", f"/_exports/{result['filename']}")
    assert direct.status == 404, direct.body[:500]


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
    the response, and from the app in gunicorn's access log, which records
    the X-Request-ID the app answered with (nginx hides that one).

    /readyz rather than /api/...: nginx rate limits /api/ per client address
    (20 r/s, burst 40, 20 connections), so 200 requests from one address at
    once would meet 429s by design. /readyz is not limited, echoes the id and
    still queries the database on every request.
    """
    markers = [f"marker-{index}-{uuid.uuid4().hex[:8]}" for index in range(200)]

    def call(marker: str) -> tuple[str, int, list[str]]:
        answer = stack.request("GET", "/readyz", headers={"X-Request-ID": marker})
        return marker, answer.status, answer.headers.get_all("X-Request-ID") or []

    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(call, markers))
    wrong = [answer for answer in answers if answer[1:] != (200, [answer[0]])]
    assert wrong == [], wrong[:5]

    gunicorn_log = stack.services[0].log

    def app_ids() -> set[str] | None:
        seen: set[str] = set()
        for line in gunicorn_log.read_text(encoding="utf-8").splitlines():
            if '"path": "/readyz"' in line and line.startswith("{"):
                record = json.loads(line)
                seen.add(record["request_id"])
                assert record["status"] == 200, record
        return seen if seen >= set(markers) else None

    wait_for(app_ids, 10, "gunicorn's access log of the 200 requests")


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
    """A client that resets the connection after 64 KiB of the CSV export
    ends the generator, so its cursor, transaction and connection are
    released rather than left idle in transaction."""
    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.settimeout(30)
    try:
        client.connect((stack.host, stack.port))
        client.sendall(
            b"GET /api/events/export.csv HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\nX-Request-ID: e2e-hangup\r\n\r\n"
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

"""gunicorn's gevent worker on PostgreSQL, started with the shipped
deploy/gunicorn.conf.py and serving tests/slow_app.py (the app plus two
test-only routes).

Cooperation is shown, not timed: many requests of one gevent worker wait
in PostgreSQL at the same moment, as ``pg_stat_activity`` sees it, while a
gthread worker holds only as many as it has threads. A request that spins
the CPU is named by the loop monitor: a WARNING with its request id and
stack, and a count on /metrics.
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask_migrate import upgrade
from prometheus_client.parser import text_string_to_metric_families
{%- if cookiecutter.use_celery == "y" %}
from redis import Redis
{%- endif %}
from sqlalchemy import Engine, create_engine, text

from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.config import normalize_database_url
from {{ cookiecutter.package_name }}.extensions import db

from pg_cluster import private_cluster
from support import TESTS_DIR, free_port, process_group, wait_for

CONFIG_PATH = TESTS_DIR.parent / "deploy" / "gunicorn.conf.py"
WAITERS = 20
THREADS = 4


@pytest.fixture(scope="module")
def database_url(postgres_url: str | None) -> Iterator[str]:
    """The session's PostgreSQL database, or without one (a run on SQLite)
    a migrated database on a private server: these tests need PostgreSQL."""
    if postgres_url is not None:
        yield postgres_url
        return
    with private_cluster() as cluster:
        app = create_app({"APP_ENV": "testing", "SQLALCHEMY_DATABASE_URI": cluster.url})
        with app.app_context():
            upgrade()
            db.engine.dispose()
        yield cluster.url


@pytest.fixture
def server_db(database_url: str) -> Iterator[Engine]:
    engine = create_engine(normalize_database_url(database_url))
    yield engine
    engine.dispose()


class Gunicorn:
    def __init__(self, port: int, log: Path, application_name: str) -> None:
        self.port = port
        self.log = log
        self.application_name = application_name

    def get(
        self, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request("GET", path, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def answers(self) -> bool:
        try:
            return self.get("/healthz")[0] == 200
        except OSError:
            return False

    def log_records(self) -> list[dict[str, Any]]:
        lines = self.log.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


@contextmanager
def running_gunicorn(
    tmp_path: Path, database_url: str, app_env: dict[str, str], **variables: str
) -> Iterator[Gunicorn]:
    """One worker under the shipped config, serving slow_app:app, answering
    /healthz; ``app_env`` adds to its environment, ``variables`` are
    ``GUNICORN_`` settings. Stopped with SIGTERM on exit."""
    port = free_port()
    application_name = f"gevent-test-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "APP_ENV": "testing",
        "DATABASE_URL": database_url,
        # Every session of this gunicorn carries this name in pg_stat_activity.
        "DATABASE_APPLICATION_NAME": application_name,
        # A connection for every waiter: the pool, not the worker, would
        # otherwise be what limits them.
        "DATABASE_POOL_SIZE": str(WAITERS),
        "DATABASE_MAX_OVERFLOW": "0",
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])
        ),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        "HOME": str(tmp_path / "home"),
        **app_env,
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "1",
        "GUNICORN_WSGI_APP": "slow_app:app",
        "GUNICORN_GRACEFUL_TIMEOUT": "5",
        **{f"GUNICORN_{name}": value for name, value in variables.items()},
    }
    env.pop("XDG_RUNTIME_DIR", None)
    server = Gunicorn(port, tmp_path / "gunicorn.log", application_name)
    command = [sys.executable, "-m", "gunicorn", "-c", str(CONFIG_PATH)]
    with process_group(command, env, server.log, grace=10) as process:
        wait_for(
            lambda: server.answers() or process.poll() is not None,
            timeout=60,
            what="gunicorn to answer",
        )
        assert process.poll() is None, server.log.read_text()
        yield server
        assert process.poll() is None, server.log.read_text()


def waiting_sessions(engine: Engine, application_name: str) -> int:
    """Sessions of that gunicorn waiting for the test's advisory lock."""
    with engine.connect() as connection:
        return connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = :name AND wait_event = 'advisory'"
                " AND query LIKE '%pg_advisory_xact_lock_shared%'"
            ),
            {"name": application_name},
        ).scalar_one()


@pytest.mark.parametrize(
    ("worker_class", "at_once"),
    [("gevent", WAITERS), ("gthread", THREADS)],
)
def test_one_worker_waits_in_postgresql_for_many_requests_at_once(
    server_db: Engine,
    database_url: str,
    tmp_path: Path,
    worker_class: str,
    at_once: int,
) -> None:
    """With the test holding the lock, each request blocks in PostgreSQL
    until released. One gevent worker gets all WAITERS of them there at the
    same time; one gthread worker, only its THREADS."""
    lock_key = uuid.uuid4().int % 2**62
    threads = {"THREADS": str(THREADS)} if worker_class == "gthread" else {}
    with (
        running_gunicorn(
            tmp_path,
            database_url,
            {"TEST_LOCK_KEY": str(lock_key)},
            WORKER_CLASS=worker_class,
            **threads,
        ) as server,
        server_db.connect() as holder,
    ):
        holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": lock_key})
        with ThreadPoolExecutor(max_workers=WAITERS) as pool:
            answers: list[Future[tuple[int, bytes]]] = [
                pool.submit(server.get, "/test/wait-in-postgresql")
                for _ in range(WAITERS)
            ]
            seen = wait_for(
                lambda: waiting_sessions(server_db, server.application_name) >= at_once,
                timeout=60,
                what=f"{at_once} requests waiting in PostgreSQL",
            )
            assert seen
            # A gthread worker has no thread left for another request.
            assert waiting_sessions(server_db, server.application_name) == at_once
            assert not any(answer.done() for answer in answers)
            holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": lock_key})
            results = [answer.result(timeout=60) for answer in answers]
        holder.commit()
    assert [status for status, _ in results] == [200] * WAITERS, server.log.read_text()
    # One worker process answered them all.
    assert len({json.loads(body)["pid"] for _, body in results}) == 1


def blocks_counted(server: Gunicorn, endpoint: str) -> float:
    """``event_loop_blocks_total`` of ``endpoint`` on /metrics."""
    status, body = server.get("/metrics")
    assert status == 200
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if (
                sample.name == "event_loop_blocks_total"
                and sample.labels.get("endpoint") == endpoint
            ):
                return sample.value
    return 0.0


def monitor_warnings(server: Gunicorn) -> list[dict[str, Any]]:
    return [
        record
        for record in server.log_records()
        if record.get("level") == "WARNING"
        and record.get("logger", "").endswith("loop_monitor")
    ]


def test_a_request_that_holds_the_loop_is_logged_and_counted(
    server_db: Engine, database_url: str, tmp_path: Path
) -> None:
    """A handler that computes for a second without yielding, under a
    0.1 s threshold: one warning names its request id and its function, and
    the counter of its endpoint goes up."""
    request_id = f"spin-test.{uuid.uuid4().hex[:8]}"
    with running_gunicorn(
        tmp_path,
        database_url,
        {},
        WORKER_CLASS="gevent",
        GEVENT_MAX_BLOCKING_SECONDS="0.1",
    ) as server:
        assert blocks_counted(server, "spin_without_yielding") == 0
        status, _ = server.get("/test/spin?seconds=1", {"X-Request-ID": request_id})
        assert status == 200
        wait_for(
            lambda: monitor_warnings(server),
            timeout=30,
            what="the loop monitor's warning",
        )
        assert blocks_counted(server, "spin_without_yielding") == 1
    spinning = [
        record
        for record in monitor_warnings(server)
        if record["request_id"] == request_id
    ]
    # Once, though the monitor saw the loop held at every check for a second.
    assert len(spinning) == 1, monitor_warnings(server)
    (warning,) = spinning
    assert f"request {request_id}" in warning["message"]
    assert "in spin_without_yielding" in warning["message"]  # the stack
{%- if cookiecutter.use_celery == "y" %}


def waiting_in_redis(client: Redis, name: str) -> int:
    """Connections named ``name`` blocked in BLPOP, as Redis sees them."""
    return sum(
        1
        for entry in client.client_list()
        if entry.get("name") == name and entry.get("cmd") == "blpop"
    )


@pytest.mark.parametrize(
    ("worker_class", "at_once"),
    [("gevent", WAITERS), ("gthread", THREADS)],
)
def test_one_worker_waits_in_redis_for_many_requests_at_once(
    database_url: str,
    celery_env: dict[str, str],
    tmp_path: Path,
    worker_class: str,
    at_once: int,
) -> None:
    """redis-py's sockets (the broker's and the rate limiter's too) yield
    under gevent: while Redis holds every request in BLPOP, one gevent
    worker has all WAITERS of them waiting there; gthread, its THREADS."""
    key = f"{celery_env['CELERY_KEY_PREFIX']}gevent-wait-{uuid.uuid4().hex[:8]}"
    name = f"gevent-test-{uuid.uuid4().hex[:8]}"
    threads = {"THREADS": str(THREADS)} if worker_class == "gthread" else {}
    with (
        running_gunicorn(
            tmp_path,
            database_url,
            {"TEST_LIST_KEY": key, "TEST_CLIENT_NAME": name},
            WORKER_CLASS=worker_class,
            WSGI_APP="slow_app_redis:app",
            **threads,
        ) as server,
        Redis.from_url(celery_env["REDIS_URL"]) as redis,
        ThreadPoolExecutor(max_workers=WAITERS) as pool,
    ):
        answers = [
            pool.submit(server.get, "/test/wait-in-redis") for _ in range(WAITERS)
        ]
        wait_for(
            lambda: waiting_in_redis(redis, name) >= at_once,
            timeout=60,
            what=f"{at_once} requests waiting in Redis",
        )
        assert waiting_in_redis(redis, name) == at_once
        assert not any(answer.done() for answer in answers)
        redis.rpush(key, *range(WAITERS))
        results = [answer.result(timeout=60) for answer in answers]
        redis.delete(key)
    assert [status for status, _ in results] == [200] * WAITERS, server.log.read_text()
    assert len({json.loads(body)["pid"] for _, body in results}) == 1
{%- endif %}

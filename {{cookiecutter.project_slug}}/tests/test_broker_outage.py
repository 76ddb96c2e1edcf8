"""Redis going away, or freezing, under a real worker and a real app.

Each test runs a ``redis-server`` of its own on a free port, so it can
kill, restart and freeze it without touching the shared one. The worker is
a real ``celery worker`` process started as production starts it (gossip,
mingle and heartbeats on), holding its task at the gate (worker_gate) while
Redis goes away.
"""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from redis import Redis
from redis.exceptions import RedisError

from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.celery_app import BROKER
from {{ cookiecutter.package_name }}.config import ConfigError
from test_worker_process import start_summary, summaries_of

from celery_support import celery_process, finished_job
from support import (
    CapturingTransport,
    account_id,
    free_port,
    problem_of,
    skip_or_fail,
    wait_for,
)

# A generous liveness bound, not a benchmark: the budget, the rate limiter's
# own half-second wait on the same Redis, and slack for a busy machine.
BROKER_TIMEOUT = 1
ANSWER_WITHIN = BROKER_TIMEOUT + 3


class RedisServer:
    """A ``redis-server`` of one test, to stop, restart and freeze at will.

    With ``persist`` it saves its data when stopped with SIGTERM and loads
    it when started again, as a Redis with a volume does.
    """

    def __init__(self, binary: str, directory: Path, files: ExitStack) -> None:
        self.binary = binary
        self.port = free_port()
        self.directory = directory
        self.files = files
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, persist: bool = False) -> None:
        log = self.files.enter_context((self.directory / "redis.log").open("ab"))
        self.process = subprocess.Popen(  # noqa: S603 - the test's own argv
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "no",
                "--save",
                "3600 1" if persist else "",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self.answers, timeout=10, what="redis-server to answer")

    def answers(self) -> bool:
        client = Redis.from_url(self.url, socket_connect_timeout=0.2)
        try:
            return bool(client.ping())
        except RedisError:
            return False
        finally:
            client.close()

    def stop(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)
        self.process.wait(timeout=10)

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis; skips without ``redis-server`` (fails under CI=true)."""
    binary = shutil.which("redis-server")
    if binary is None:
        skip_or_fail("redis-server is not installed")
    directory = tmp_path / "redis"
    directory.mkdir()
    with ExitStack() as files:
        server = RedisServer(binary, directory, files)
        try:
            yield server
        finally:
            server.close()


def production_worker(env: dict[str, str], log_path: Path) -> Any:
    """A worker started as compose starts it. Two pool processes: while one
    runs a task, the worker still waits on Redis for the next (BRPOP), as
    production workers do, and that wait is part of what breaks."""
    arguments = [
        "worker",
        "--loglevel=INFO",
        "--concurrency=2",
        "--include=worker_gate",
        f"--hostname=test-{uuid.uuid4().hex[:8]}@%h",
    ]
    return celery_process(arguments, env, log_path, ready=" ready.")


def reconnected_or_gave_up(log: str) -> str | None:
    """The log once the worker connected a second time or stopped trying
    (a worker going down waits for its held task, so it does not exit)."""
    done = log.count("Connected to redis://") >= 2 or "Unrecoverable error" in log
    return log if done else None


@pytest.mark.parametrize("comes_back", ["empty", "with its data"])
def test_worker_outlives_redis_going_away_mid_task(
    make_app: Callable[..., Flask],
    database_url: str,
    own_redis: RedisServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    comes_back: str,
) -> None:
    persist = comes_back == "with its data"
    own_redis.start(persist=persist)
    monkeypatch.setenv("REDIS_URL", own_redis.url)
    gate = tmp_path / "gate"
    gate.mkdir()
    env = {
        "REDIS_URL": own_redis.url,
        "CELERY_KEY_PREFIX": "",
        "DATABASE_URL": database_url,
        "WORKER_GATE_DIR": str(gate),
        "WORKER_GATE_PHASE": "prerun",
    }
    app = make_app()
    client = app.test_client()
    with production_worker(env, tmp_path / "worker.log") as worker:
        interrupted = start_summary(client)
        wait_for(lambda: list(gate.glob("reached-*")), what="the task to start")

        # SIGTERM: Redis saves and closes; SIGKILL: it vanishes.
        own_redis.stop(signal.SIGTERM if persist else signal.SIGKILL)
        wait_for(lambda: "Connection to broker lost" in worker.log(), what="loss")
        own_redis.start(persist=persist)
        log = wait_for(lambda: reconnected_or_gave_up(worker.log()), what="reconnect")
        assert "Unrecoverable error" not in log, log
        (gate / "release").touch()
        first = wait_for(lambda: finished_job(client, interrupted), what="job")

        assert worker.process.poll() is None, worker.log()
        later = start_summary(client)
        second = wait_for(lambda: finished_job(client, later), what="a new job")
        log = worker.log()

    assert "Unrecoverable error" not in log, log
    assert first["status"] == "succeeded", log
    assert first["attempts"] == 1
    assert first["result"]["total"] == "12.25"
    assert second["status"] == "succeeded", log
    assert second["result"]["total"] == "24.50"
    assert summaries_of(app, owner_id=account_id(app)) == 2


def test_enqueueing_answers_503_within_the_broker_timeout_while_redis_is_frozen(
    make_app: Callable[..., Flask],
    database_url: str,
    own_redis: RedisServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    sentry_transport: CapturingTransport,
) -> None:
    own_redis.start()
    monkeypatch.setenv("REDIS_URL", own_redis.url)
    monkeypatch.setenv("CELERY_BROKER_TIMEOUT_SECONDS", str(BROKER_TIMEOUT))
    env = {"REDIS_URL": own_redis.url, "CELERY_KEY_PREFIX": ""}
    env["DATABASE_URL"] = database_url
    app = make_app(
        SENTRY_DSN="https://key@sentry.invalid/1", SENTRY_TRANSPORT=sentry_transport
    )
    client = app.test_client()
    BROKER.answered()  # no burst left open by an earlier test
    with production_worker(env, tmp_path / "worker.log") as worker:
        # Sends go over a pooled connection that is open when Redis freezes.
        warm = start_summary(client)
        wait_for(lambda: finished_job(client, warm), what="the first job")

        own_redis.signal(signal.SIGSTOP)
        with caplog.at_level(logging.INFO, logger="{{ cookiecutter.package_name }}"):
            failed, request_ids = [], []
            for _ in range(2):
                started = time.monotonic()
                response = client.post("/api/jobs/owner-summaries")
                elapsed = time.monotonic() - started
                assert response.status_code == 503, response.data
                assert elapsed < ANSWER_WITHIN, f"answered after {elapsed:.1f}s"
                assert int(response.headers["Retry-After"]) > 0
                failed.append(problem_of(response)["job_id"])
                request_ids.append(response.headers["X-Request-ID"])
            jobs = [client.get(f"/api/jobs/{job_id}").get_json() for job_id in failed]

            own_redis.signal(signal.SIGCONT)
            after = client.post("/api/jobs/owner-summaries")
        assert after.status_code == 202, after.data
        done = wait_for(lambda: finished_job(client, after.get_json()["status_url"]))
        log = worker.log()

    assert [job["status"] for job in jobs] == ["failed", "failed"]
    assert done["status"] == "succeeded", log
    outage = [r for r in caplog.records if r.name.endswith(".outages")]
    assert [r.levelno for r in outage] == [logging.ERROR, logging.WARNING], outage
    assert "broker unavailable" in outage[0].getMessage()
    assert "after 2 failed attempts" in outage[1].getMessage()
    assert outage[0].request_id == request_ids[0]  # the request that met it first
    assert not any(r.exc_info for r in caplog.records), "a traceback was logged"
    assert len(sentry_transport.events()) == 1  # one report per outage


def test_the_broker_timeout_bounds_every_wait_on_redis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # never reached
    monkeypatch.setenv("CELERY_BROKER_TIMEOUT_SECONDS", "4")
    conf = create_app({"APP_ENV": "testing"}).extensions["celery"].conf
    options = conf.broker_transport_options
    assert options["socket_timeout"] + options["socket_connect_timeout"] <= 4
    assert conf.redis_socket_timeout + conf.redis_socket_connect_timeout <= 4
    assert conf.task_publish_retry is False
    assert conf.broker_connection_max_retries is None  # the worker never gives up
    monkeypatch.setenv("CELERY_BROKER_TIMEOUT_SECONDS", "0")
    with pytest.raises(ConfigError, match="CELERY_BROKER_TIMEOUT_SECONDS"):
        create_app({"APP_ENV": "testing"})

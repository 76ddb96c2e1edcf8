"""What the Celery tests share: this session's Redis, a real worker
process, waiting for a job to finish.

conftest.py loads this module as a plugin, so its fixtures reach every test;
a project without Celery has neither the module nor that line.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from redis import Redis
from redis.exceptions import RedisError

from {{ cookiecutter.package_name }}.celery_app import close_celery
from {{ cookiecutter.package_name }}.jobs.models import FINISHED

from support import TESTS_DIR, process_group, skip_or_fail, wait_for


@pytest.fixture(autouse=True)
def celery_closed(app_closers: list[Callable[[Flask], None]]) -> None:
    """Close the broker and result-store connections of every app a test
    built, so sockets do not pile up over the session."""
    app_closers.append(lambda app: close_celery(app.extensions["celery"]))


@pytest.fixture(scope="session")
def redis_server() -> Iterator[tuple[str, str]]:
    """(REDIS_URL, key prefix) of this session; its keys are deleted after.

    Without a reachable Redis the Celery tests skip on a laptop, and fail
    under CI=true, where a missing service is a broken machine.
    """
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    client = Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.ping()
    except RedisError as exc:
        skip_or_fail(f"Redis at {url} is not reachable: {exc}")
    prefix = f"test-{uuid.uuid4().hex[:12]}:"
    yield url, prefix
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    client.close()


@pytest.fixture
def celery_env(
    redis_server: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Point apps built in this test at the session's Redis and key prefix."""
    url, prefix = redis_server
    env = {
        "REDIS_URL": url,
        "CELERY_KEY_PREFIX": prefix,
        # Rate-limit counts of this test alone: one test's 401s never 429 another's.
        "RATELIMIT_KEY_PREFIX": f"{prefix}limits-{uuid.uuid4().hex[:8]}",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


class WorkerProcess:
    def __init__(self, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.process = process
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def celery_process(
    arguments: list[str], env: dict[str, str], log_path: Path, ready: str
) -> Iterator[WorkerProcess]:
    """``celery -A <package>.worker <arguments>``, started once ``ready``
    is in its log, stopped on exit. The tests folder is on its path, so
    ``--include=worker_gate`` works."""
    command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "{{ cookiecutter.package_name }}.worker",
        *arguments,
    ]
    full_env = {
        **os.environ,
        "APP_ENV": "testing",
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")])
        ),
        **env,
    }
    with process_group(command, full_env, log_path, grace=15) as process:
        started = WorkerProcess(process, log_path)
        wait_for(
            lambda: ready in started.log() or process.poll() is not None,
            timeout=60,
            what=f"celery {arguments[0]} to start",
        )
        assert process.poll() is None, started.log()
        yield started


def finished_job(client: FlaskClient, status_url: str) -> dict[str, Any] | None:
    """The job's status once it is final, else ``None``: for ``wait_for``."""
    body = client.get(status_url).get_json()
    return body if body["status"] in FINISHED else None

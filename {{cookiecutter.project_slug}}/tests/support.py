"""Helpers shared by the tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any, NoReturn, TypeVar

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport
from sentry_sdk.types import Event
from werkzeug.test import TestResponse

from {{ cookiecutter.package_name }}.accounts import services as accounts
from {{ cookiecutter.package_name }}.extensions import db

TESTS_DIR = Path(__file__).resolve().parent
PROJECT_DIR = TESTS_DIR.parent


def skip_or_fail(message: str) -> NoReturn:
    """Skip a test whose service or tool is missing on a laptop; under
    CI=true a missing one is a broken machine, and the test fails."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI=true requires it")
    pytest.skip(message)


def checked_out(app: Flask) -> int:
    """Connections the app's pool has lent out right now."""
    with app.app_context():
        return db.engine.pool.checkedout()


def problem_of(response: TestResponse) -> dict[str, Any]:
    """The problem+json body of an error response, checked for its shape."""
    assert response.mimetype == "application/problem+json", response.data
    body = response.get_json(force=True)
    assert body["status"] == response.status_code
    assert "title" in body
    return body


T = TypeVar("T")


def wait_for(
    probe: Callable[[], T | None], timeout: float = 30, what: str = "condition"
) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def stop_process_group(process: subprocess.Popen[bytes], grace: float) -> None:
    """Stop a process started with ``start_new_session=True`` and its
    children the way a process manager does: SIGTERM, then SIGKILL after
    ``grace`` seconds."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def process_group(
    command: list[str],
    env: dict[str, str],
    stdout: Path,
    stderr: Path | None = None,
    grace: float = 15,
) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` run from the project directory in a process group of its
    own, its output in files (stderr joins stdout unless given a file of
    its own); stopped with ``stop_process_group`` on exit."""
    with ExitStack() as files:
        out = files.enter_context(stdout.open("wb"))
        err: IO[bytes] | int = (
            files.enter_context(stderr.open("wb")) if stderr else subprocess.STDOUT
        )
        process = subprocess.Popen(  # noqa: S603 - the tests' own argv
            command,
            cwd=PROJECT_DIR,
            env=env,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop_process_group(process, grace=grace)


ALL_SCOPES = tuple(str(scope) for scope in accounts.Scope)
DEFAULT_ACCOUNT = "tester"


def issue_token(
    app: Flask, account: str = DEFAULT_ACCOUNT, scopes: tuple[str, ...] = ALL_SCOPES
) -> str:
    """A new token of ``account`` (created if missing) on ``app``'s database."""
    with app.app_context():
        owner = accounts.get_or_create_account(account)
        return accounts.issue_token(owner, scopes, name="test").secret


def account_id(app: Flask, account: str = DEFAULT_ACCOUNT) -> int:
    with app.app_context():
        return accounts.get_or_create_account(account).id


# An id no row has: asking for it must look like asking for another
# account's.
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


class Tenant:
    """One account: its client and the ids of what it made."""

    def __init__(self, app: Flask, name: str) -> None:
        self.name = name
        self.client = app.test_client(token=issue_token(app, name))
        self.account_id = account_id(app, name)
        self.events = [self.add_event(n) for n in range(3)]

    def add_event(self, n: int) -> str:
        response = self.client.post(
            "/api/events",
            json={"kind": f"{self.name}.k", "amount": f"{n}.50", "payload": self.name},
        )
        assert response.status_code == 201, response.data
        return response.get_json()["id"]


def same_answer(mine: Any, unknown: Any, other_id: str) -> None:
    """``mine`` (another account's id) and ``unknown`` are indistinguishable."""
    assert mine.status_code == unknown.status_code == 404
    mine_body = problem_of(mine)
    unknown_body = problem_of(unknown)
    for body in (mine_body, unknown_body):
        body.pop("request_id")
    assert json.dumps(mine_body).replace(other_id, UNKNOWN_ID) == json.dumps(
        unknown_body
    )


class _Default:
    """The default token of a client: the app's ``tester`` account's."""


DEFAULT_TOKEN = _Default()


class ApiClient(FlaskClient):
    """A test client that sends ``Authorization: Bearer``: by default a
    read-write token of the ``tester`` account, issued on the first request;
    ``app.test_client(token="...")`` for another, ``token=None`` for none."""

    def __init__(
        self, *args: Any, token: str | _Default | None = DEFAULT_TOKEN, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.token = token
        if isinstance(token, str):
            self.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"

    def open(self, *args: Any, **kwargs: Any) -> Any:
        if isinstance(self.token, _Default):
            self.token = issue_token(self.application)
            self.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {self.token}"
        return super().open(*args, **kwargs)


class CapturingTransport(Transport):
    """Keeps what Sentry would send in memory: events reach no server."""

    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)

    def events(self) -> list[Event]:
        """Error events only, not sessions or client reports."""
        return [
            event
            for envelope in self.envelopes
            if (event := envelope.get_event()) is not None
        ]

"""Helpers shared by the tests."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport
from sentry_sdk.types import Event
from werkzeug.test import TestResponse

from {{ cookiecutter.package_name }}.extensions import db


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

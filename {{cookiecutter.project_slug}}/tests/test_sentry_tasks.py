"""Sentry reports from Celery tasks run by a real worker on Redis.

The worker is a thread of this process, so its events reach the same
in-memory transport as the app's.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import NamedTuple

import pytest
from celery.app import trace
from celery.contrib.testing.worker import start_worker
from celery.worker.consumer import consumer
from flask import Flask
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from sentry_sdk.types import Event
from sqlalchemy.exc import OperationalError

from {{ cookiecutter.package_name }} import tracing
from {{ cookiecutter.package_name }}.accounts import Scope, require
from {{ cookiecutter.package_name }}.accounts import services as accounts

from support import CapturingTransport, account_id, wait_for

DSN = "https://public@sentry.example.invalid/1"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
transient_attempts: list[int] = []


class ReportingWorker(NamedTuple):
    app: Flask
    # Returns once every task sent before the call has run.
    drain: Callable[[], None]


@pytest.fixture
def reporting_worker(
    make_app: Callable[..., Flask],
    celery_env: dict[str, str],
    sentry_transport: CapturingTransport,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ReportingWorker]:
    """An app reporting to ``sentry_transport``, with a task that fails, a
    route that sends it, and a worker thread serving its Celery."""
    # Traced too, spans kept in memory: a task's event names its trace.
    app = make_app(
        SENTRY_DSN=DSN,
        SENTRY_TRANSPORT=sentry_transport,
        TRACING_EXPORTER=InMemorySpanExporter(),
    )
    assert tracing.init_tracing(app, "web")
    # Sentry hooks into Celery by replacing celery.app.trace.build_tracer.
    # `celery worker` imports its consumer, which copies that name, after
    # the app (and Sentry) is set up; this test process imported it while
    # collecting tests. Give it the function a worker process would have.
    monkeypatch.setattr(consumer, "build_tracer", trace.build_tracer)
    celery = app.extensions["celery"]
    drained = threading.Event()
    transient_attempts.clear()

    @celery.task(name="test.explode", shared=False, ignore_result=True)
    def explode() -> None:
        raise ValueError("task exploded on purpose")

    @celery.task(
        name="test.always_transient",
        shared=False,
        ignore_result=True,
        max_retries=2,
        retry_backoff=False,
        default_retry_delay=0,
    )
    def always_transient() -> None:
        transient_attempts.append(1)
        raise OperationalError("SELECT 1", {}, Exception("connection reset"))

    @celery.task(name="test.drain", shared=False, ignore_result=True)
    def drain_task() -> None:
        # Also closes the worker thread's result-store client, so no socket
        # outlives the worker.
        celery.backend.client.connection_pool.disconnect()
        drained.set()

    def drain() -> None:
        """One worker thread runs tasks in order: when this one has run,
        so has every task sent before it."""
        drained.clear()
        drain_task.delay()
        assert drained.wait(timeout=30)

    @app.post("/api/explode-later")
    @require(Scope.WRITE)
    def explode_later() -> tuple[dict[str, str], int]:
        explode.delay()
        return {}, 202

    @app.post("/fail-transiently-later")
    def fail_transiently_later() -> tuple[dict[str, str], int]:
        always_transient.delay()
        return {}, 202

    with start_worker(celery, pool="solo", perform_ping_check=False, loglevel="INFO"):
        yield ReportingWorker(app, drain)
        drain()


def test_a_failing_task_is_reported_once_with_the_senders_request_id_and_caller(
    reporting_worker: ReportingWorker, sentry_transport: CapturingTransport
) -> None:
    app = reporting_worker.app
    with app.app_context():
        caller = accounts.get_or_create_account("sender")
        token = accounts.issue_token(caller, ["write"], name="test")
    response = app.test_client(token=token.secret).post(
        "/api/explode-later",
        headers={"X-Request-ID": "req-to-failing-task", "traceparent": TRACEPARENT},
    )
    assert response.status_code == 202
    reporting_worker.drain()
    [event] = sentry_transport.events()
    assert event["tags"]["request_id"] == "req-to-failing-task"
    assert event["tags"]["account_id"] == str(account_id(app, "sender"))
    assert event["tags"]["token_id"] == str(token.id)
    assert event["tags"]["trace_id"] == TRACE_ID  # the sender's trace, continued
    assert token.secret not in json.dumps(event, default=str)
    [exception] = event["exception"]["values"]
    assert exception["type"] == "ValueError"
    assert exception["mechanism"]["type"] == "celery"
    assert event["transaction"] == "test.explode"


def last_exception_type(event: Event) -> str | None:
    values = event.get("exception", {}).get("values") or [{}]
    kind: str | None = values[-1].get("type")
    return kind


def test_retries_are_not_reported_only_the_final_failure(
    reporting_worker: ReportingWorker, sentry_transport: CapturingTransport
) -> None:
    response = reporting_worker.app.test_client().post(
        "/fail-transiently-later", headers={"X-Request-ID": "req-to-flaky-task"}
    )
    assert response.status_code == 202

    def task_failures() -> list[Event]:
        # Only the task's own errors. The worker is a thread of the sending
        # process here, and OpenTelemetry's Celery instrumentation keeps a
        # publish's span by task id on the task object both share: a retry
        # published before the sender's publish has finished replaces the
        # sender's span, whose context then fails to detach in the worker's
        # thread, logged (so reported) as an ERROR. Processes of their own,
        # as in production, share no task object.
        return [
            event
            for event in sentry_transport.events()
            if last_exception_type(event) == "OperationalError"
        ]

    wait_for(task_failures, what="the final failure's Sentry event")
    reporting_worker.drain()
    assert len(transient_attempts) == 3  # the first run and 2 retries
    [event] = task_failures()
    assert event["tags"]["request_id"] == "req-to-flaky-task"

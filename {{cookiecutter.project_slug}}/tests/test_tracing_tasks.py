"""One trace from a request to the task it sent, run by a real worker.

The worker runs in this process (a thread, as in test_tasks.py) and so
shares the request's tracer provider and in-memory exporter; messages go
through Redis, so the trace crosses in the message headers as it does
between two machines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest
from celery.contrib.testing.worker import start_worker
from flask import Flask
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind

from {{ cookiecutter.package_name }} import tracing
from {{ cookiecutter.package_name }}.jobs import tasks

from support import wait_for

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE_ID}-b7ad6b7169203331-01"


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traced_worker_app(
    make_app: Callable[..., Flask],
    celery_env: dict[str, str],
    spans: InMemorySpanExporter,
) -> Iterator[Flask]:
    app = make_app(TRACING_EXPORTER=spans)
    assert tracing.init_tracing(app, "web")
    celery = app.extensions["celery"]
    with start_worker(celery, pool="solo", perform_ping_check=False, loglevel="INFO"):
        yield app
    tracing.shutdown_tracing()


def statement(span: ReadableSpan) -> str:
    attributes = span.attributes or {}
    return str(attributes.get("db.statement") or attributes.get("db.query.text") or "")


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent and s.parent.span_id == parent.context.span_id]


def test_a_request_and_the_task_it_sent_are_one_trace(
    traced_worker_app: Flask,
    spans: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    client = traced_worker_app.test_client()
    response = client.post(
        "/api/jobs/owner-summaries",
        headers={"traceparent": TRACEPARENT, "X-Request-ID": "req-traced-task"},
    )
    assert response.status_code == 202
    status_url = response.get_json()["status_url"]
    wait_for(
        lambda: client.get(status_url).get_json()["status"] == "succeeded",
        what="the job",
    )
    run_name = f"run/{tasks.summarize_owner.name}"
    wait_for(
        lambda: any(s.name == run_name for s in spans.get_finished_spans()),
        what="the task's span",
    )

    trace_id = int(TRACE_ID, 16)
    ours = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
    [http] = [s for s in ours if s.kind == SpanKind.SERVER]
    assert http.name == "POST /api/jobs/owner-summaries"
    [sent] = [s for s in ours if s.kind == SpanKind.PRODUCER]
    [run] = [s for s in ours if s.kind == SpanKind.CONSUMER]
    assert run.name == run_name
    # HTTP span -> its SQL spans and the send -> the task's run -> its SQL.
    assert any(
        statement(s).startswith("INSERT INTO jobs") for s in children(ours, http)
    )
    assert sent.parent is not None
    assert sent.parent.span_id == http.context.span_id
    assert run.parent is not None
    assert run.parent.span_id == sent.context.span_id
    task_sql = [statement(s) for s in children(ours, run) if statement(s)]
    assert any(sql.startswith("INSERT INTO events") for sql in task_sql), task_sql
    assert any(sql.startswith("UPDATE jobs") for sql in task_sql), task_sql

    # The request's and the task's log lines lead to this trace.
    records = [r for r in caplog.records if r.request_id == "req-traced-task"]
    task_records = [r for r in records if r.name.endswith("jobs.tasks")]
    assert task_records
    assert {r.trace_id for r in records} == {TRACE_ID}
    assert {r.span_id for r in task_records} <= {
        trace.format_span_id(s.context.span_id) for s in [run, *children(ours, run)]
    }

"""Tracing (tracing.py) with spans kept in memory: the SDK, the
instrumentations and the propagation are the real ones, only OTLP export is
replaced.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata

import pytest
from flask import Flask
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import SpanKind

from {{ cookiecutter.package_name }} import logs, sentry, tracing
from {{ cookiecutter.package_name }}.cli import seed_events
from {{ cookiecutter.package_name }}.events.routes import create

from support import CapturingTransport, account_id

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
EXPORTER_THREAD = "OtelBatch"


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def traced_app(
    make_app: Callable[..., Flask], spans: InMemorySpanExporter
) -> Iterator[Flask]:
    app = make_app(TRACING_EXPORTER=spans)
    assert tracing.init_tracing(app, "web")
    yield app
    tracing.shutdown_tracing()


def hex_id(span_id: int) -> str:
    return trace.format_span_id(span_id)


def server_span(spans: InMemorySpanExporter, name: str) -> ReadableSpan:
    [span] = [
        s
        for s in spans.get_finished_spans()
        if s.kind == SpanKind.SERVER and s.name == name
    ]
    return span


def sql_spans(spans: InMemorySpanExporter, trace_id: int) -> list[ReadableSpan]:
    """The SQL statements of one trace."""
    return [
        s
        for s in spans.get_finished_spans()
        if s.context.trace_id == trace_id and statement(s)
    ]


def statement(span: ReadableSpan) -> str:
    attributes = span.attributes or {}
    return str(attributes.get("db.statement") or attributes.get("db.query.text") or "")


def exporter_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if EXPORTER_THREAD in t.name]


def test_without_an_endpoint_nothing_is_traced_or_started(
    make_app: Callable[..., Flask],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    app = make_app()
    assert tracing.init_tracing(app, "web") is False
    assert exporter_threads() == []
    assert not getattr(app, "_is_instrumented_by_opentelemetry", False)

    @app.get("/logged")
    def logged() -> dict[str, str]:
        logging.getLogger("test.tracing").info("a line of the request")
        return {}

    response = app.test_client().get("/logged", headers={"traceparent": TRACEPARENT})
    assert response.status_code == 200
    [record] = [r for r in caplog.records if r.name == "test.tracing"]
    assert (record.trace_id, record.span_id) == ("-", "-")

    # With an endpoint: an exporter thread, gone again after.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    traced = make_app()
    assert tracing.init_tracing(traced, "web") is True
    try:
        assert len(exporter_threads()) == 1
        assert traced._is_instrumented_by_opentelemetry  # type: ignore[attr-defined]
    finally:
        tracing.shutdown_tracing()
    assert exporter_threads() == []


def test_a_request_continues_the_callers_trace_through_its_sql(
    traced_app: Flask,
    spans: InMemorySpanExporter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)

    @traced_app.post("/api/events/logged")
    def logged() -> dict[str, str]:
        logging.getLogger("test.tracing").info("a line of the request")
        return create()

    response = traced_app.test_client().post(
        "/api/events/logged",
        json={"kind": "sale", "amount": "1.50"},
        headers={"traceparent": TRACEPARENT, "X-Request-ID": "req-traced-1"},
    )
    assert response.status_code == 201
    http = server_span(spans, "POST /api/events/logged")
    assert trace.format_trace_id(http.context.trace_id) == TRACE_ID
    assert http.parent is not None
    assert hex_id(http.parent.span_id) == PARENT_ID
    queries = sql_spans(spans, http.context.trace_id)
    assert any(statement(q).startswith("INSERT INTO events") for q in queries)
    assert {q.parent.span_id for q in queries if q.parent} == {http.context.span_id}
    assert http.resource.attributes["service.name"] == "{{ cookiecutter.project_slug }}"
    assert http.resource.attributes["deployment.environment.name"] == "testing"
    assert http.resource.attributes[tracing.PROCESS_ATTRIBUTE] == "web"

    request_records = [r for r in caplog.records if r.name == "test.tracing"]
    assert request_records
    assert {r.trace_id for r in request_records} == {TRACE_ID}
    line = json.loads(logs.make_formatter(json=True).format(request_records[0]))
    assert line["trace_id"] == TRACE_ID
    assert line["span_id"] == hex_id(http.context.span_id)
    assert line["request_id"] == "req-traced-1"


def test_the_otel_variables_name_the_service_and_choose_the_sampling(
    make_app: Callable[..., Flask],
    spans: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing-api")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=eu-2")
    # No trace of its own, but a caller's sampled one goes on.
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    app = make_app(TRACING_EXPORTER=spans)
    assert tracing.init_tracing(app, "web")
    client = app.test_client()
    spans.clear()
    assert client.get("/api/events").status_code == 200
    assert spans.get_finished_spans() == ()
    assert (
        client.get("/api/events", headers={"traceparent": TRACEPARENT}).status_code
        == 200
    )
    http = server_span(spans, "GET /api/events")
    assert http.resource.attributes["service.name"] == "billing-api"
    assert http.resource.attributes["deployment.environment.name"] == "eu-2"
    # The installed project's version (pyproject.toml), whatever the name.
    assert http.resource.attributes["service.version"] == metadata.version(
        tracing.SERVICE
    )


class Collector(ThreadingHTTPServer):
    """An OTLP/HTTP endpoint on loopback that keeps the spans posted to it."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _CollectorHandler)
        self.span_names: list[str] = []

    @property
    def endpoint(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _CollectorHandler(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                self.server.span_names += [span.name for span in scope_spans.spans]
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def test_spans_still_buffered_are_sent_when_tracing_shuts_down(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that exits sends what its exporter still holds: with the
    batch delay far away, the request's span reaches the collector only
    because shutdown_tracing (worker_exit, a pool process's exit) flushes."""
    collector = Collector()
    thread = threading.Thread(target=collector.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")
        app = make_app()
        assert tracing.init_tracing(app, "web")
        assert app.test_client().get("/api/events").status_code == 200
        assert collector.span_names == []  # buffered, not sent yet
        tracing.shutdown_tracing()
        assert "GET /api/events" in collector.span_names
    finally:
        collector.shutdown()
        collector.server_close()
        thread.join(timeout=10)


def test_health_probes_are_not_traced(
    traced_app: Flask, spans: InMemorySpanExporter
) -> None:
    client = traced_app.test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    # Nor the statements made outside a request (readiness, issuing a token).
    assert spans.get_finished_spans() == ()


@pytest.fixture
def seeded(traced_app: Flask, spans: InMemorySpanExporter) -> Flask:
    with traced_app.app_context():
        seed_events(account_id(traced_app), 300, batch_size=100, seed=1)
    spans.clear()
    return traced_app


def stream_span(spans: InMemorySpanExporter) -> ReadableSpan:
    [span] = [s for s in spans.get_finished_spans() if s.name == "export csv stream"]
    return span


def test_the_streamed_exports_span_covers_the_whole_stream(
    seeded: Flask, spans: InMemorySpanExporter
) -> None:
    response = seeded.test_client().get(
        "/api/events/export.csv", headers={"traceparent": TRACEPARENT}, buffered=False
    )
    chunks = iter(response.response)
    first = next(chunks)
    # The view has returned, and with it the request's span; the stream's
    # span is still open.
    http = server_span(spans, "GET /api/events/export.csv")
    assert [
        s.name for s in spans.get_finished_spans() if s.name.endswith("stream")
    ] == []
    rows = (first + b"".join(chunks)).count(b"\n")
    assert rows == 301  # the header and every event
    response.close()
    stream = stream_span(spans)
    assert stream.parent is not None
    assert stream.parent.span_id == http.context.span_id
    assert stream.end_time is not None
    assert http.end_time is not None
    assert stream.end_time > http.end_time
    # The export's query (PostgreSQL: a COPY, SQLite: a SELECT) is the
    # stream's, not the request's.
    exported = [
        s
        for s in spans.get_finished_spans()
        if s.kind == SpanKind.CLIENT
        and (s.name == "COPY events" or "FROM events" in statement(s))
    ]
    assert exported
    assert {s.parent.span_id for s in exported if s.parent} == {stream.context.span_id}


@pytest.mark.parametrize("chunks_read", [0, 1])
def test_a_client_that_hangs_up_ends_the_streams_span(
    seeded: Flask, spans: InMemorySpanExporter, chunks_read: int
) -> None:
    response = seeded.test_client().get("/api/events/export.csv", buffered=False)
    chunks = iter(response.response)
    for _ in range(chunks_read):
        next(chunks)
    assert [
        s.name for s in spans.get_finished_spans() if s.name.endswith("stream")
    ] == []
    response.close()  # what a WSGI server does when the client goes away
    del chunks, response
    assert stream_span(spans).end_time is not None
    # Nothing of the request is left current.
    assert not trace.get_current_span().get_span_context().is_valid


def test_sentry_events_carry_the_trace_id(
    make_app: Callable[..., Flask],
    spans: InMemorySpanExporter,
    sentry_transport: CapturingTransport,
) -> None:
    app = make_app(
        TRACING_EXPORTER=spans,
        SENTRY_DSN="https://public@sentry.example.invalid/1",
        SENTRY_TRANSPORT=sentry_transport,
    )

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("exploded on purpose")

    assert tracing.init_tracing(app, "web")
    try:
        response = app.test_client().get("/boom", headers={"traceparent": TRACEPARENT})
    finally:
        tracing.shutdown_tracing()
    assert response.status_code == 500
    [event] = sentry_transport.events()
    assert event["tags"][sentry.TRACE_ID_TAG] == TRACE_ID

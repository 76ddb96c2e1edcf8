"""Traces to any OpenTelemetry (OTLP/HTTP) collector, off without an endpoint.

Configured by OpenTelemetry's own variables: ``OTEL_EXPORTER_OTLP_ENDPOINT``
(or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) turns tracing on; unset, nothing
is instrumented, no exporter is built and no thread is started, so requests
and tasks pay nothing. ``OTEL_TRACES_SAMPLER`` and ``OTEL_TRACES_SAMPLER_ARG``
choose the sampling (default: every trace, or as the caller's
``traceparent`` decided), ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``
override the service's name, version and environment, which otherwise come
from the project and ``APP_ENV``.

:func:`init_tracing` runs once per process, after it forked, so each
process has its own exporter, with its own connection and thread.
Gunicorn calls it in each worker (deploy/gunicorn.conf.py) and ``flask run``
when it serves the app (wsgi.py); any other process that runs the app's
work does the same after it forks.
:func:`shutdown_tracing` sends the spans still buffered when that process
exits. Flask and SQLAlchemy are instrumented: an incoming W3C
``traceparent`` is continued and every statement is a span. A feature that
brings other libraries (a message queue's client) adds their
instrumentations with :func:`instrument_also`.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import metadata
from typing import Any, Protocol

from flask import Flask
from opentelemetry import context, trace
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes

from .config import ProcessSettings, app_env
from .extensions import db

log = logging.getLogger(__name__)

SERVICE = "{{ cookiecutter.project_slug }}"
PROCESS_ATTRIBUTE = "app.process"
# Probes and scrapes every few seconds would bury the traces worth reading.
EXCLUDED_URLS = "/healthz$,/readyz$,/metrics$"


# Kinds of span a trace may begin with: a request, a message received or sent.
ROOT_KINDS = frozenset({SpanKind.SERVER, SpanKind.CONSUMER, SpanKind.PRODUCER})


class Instrumentor(Protocol):
    """What OpenTelemetry's instrumentations of a library have in common."""

    def instrument(self, **kwargs: Any) -> Any: ...

    def uninstrument(self, **kwargs: Any) -> Any: ...


# Instrumentations features add (instrument_also), besides Flask and SQLAlchemy.
_also_instrumented: list[Instrumentor] = []


class WorkOnly(Sampler):
    """Samples as ``OTEL_TRACES_SAMPLER`` says, traces that begin with a
    request or a message; a statement or client command outside one (the
    readiness probe's, a CLI command's, a queue being polled) would
    otherwise be a trace of its own, many a minute."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if not parent.is_valid and kind not in ROOT_KINDS:
            return SamplingResult(Decision.DROP)
        return self.sampler.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"WorkOnly{{ '{{' }}{self.sampler.get_description()}{{ '}}' }}"


class _Tracing:
    """What :func:`init_tracing` set up in this process, to undo it."""

    def __init__(self, provider: TracerProvider, app: Flask) -> None:
        self.provider = provider
        self.app = app


_active: _Tracing | None = None


def endpoint() -> str | None:
    """Where spans go, or None: tracing is off."""
    settings = ProcessSettings()
    if settings.OTEL_SDK_DISABLED:
        return None
    return (
        settings.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
        or settings.OTEL_EXPORTER_OTLP_ENDPOINT
    )


def resource(config: Mapping[str, Any], process_kind: str) -> Resource:
    """The project's name and version and the app's environment, each
    overridden by ``OTEL_SERVICE_NAME`` or ``OTEL_RESOURCE_ATTRIBUTES``."""
    try:
        version = metadata.version(SERVICE)
    except metadata.PackageNotFoundError:
        version = "unknown"
    defaults = Resource.create(
        {
            "service.name": SERVICE,
            "service.version": version,
            "deployment.environment.name": config.get("APP_ENV") or app_env(),
            # web or worker: one service, its processes told apart.
            PROCESS_ATTRIBUTE: process_kind,
        }
    )
    return defaults.merge(OTELResourceDetector().detect())


def instrument_also(*instrumentors: Instrumentor) -> None:
    """Have tracing instrument these libraries too, from the next
    :func:`init_tracing` on; each is added once."""
    for instrumentor in instrumentors:
        if instrumentor not in _also_instrumented:
            _also_instrumented.append(instrumentor)


def init_tracing(app: Flask, process_kind: str) -> bool:
    """Start tracing this process for ``app``, once. Returns whether this
    call started it.

    ``TRACING_EXPORTER`` is a config key, not an environment variable: a
    span exporter to send every span to at once, instead of OTLP (the
    tests keep spans in memory with one).
    """
    global _active
    if _active is not None:
        return False
    exporter: SpanExporter | None = app.config.get("TRACING_EXPORTER")
    url = endpoint() if exporter is None else None
    if exporter is None and url is None:
        return False
    # The sampler OTEL_TRACES_SAMPLER names, as the SDK reads it.
    configured = TracerProvider(shutdown_on_exit=False).sampler
    provider = TracerProvider(
        resource=resource(app.config, process_kind), sampler=WorkOnly(configured)
    )
    if exporter is None:
        # Imported here: an untraced process never loads it.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter,
        )

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        log.info("tracing %s to %s", process_kind, url)
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    instrument(app, provider)
    _active = _Tracing(provider, app)
    return True


def instrument(app: Flask, provider: TracerProvider) -> None:
    FlaskInstrumentor.instrument_app(
        app, tracer_provider=provider, excluded_urls=EXCLUDED_URLS
    )
    with app.app_context():
        engines = list(db.engines.values())
    # The instrumentation declares SQLAlchemy < 2.1; it works on 2.1 (the
    # tests check the SQL spans), so its version check is skipped.
    SQLAlchemyInstrumentor().instrument(
        engines=engines, tracer_provider=provider, skip_dep_check=True
    )
    for instrumentor in _also_instrumented:
        instrumentor.instrument(tracer_provider=provider)


def shutdown_tracing() -> None:
    """Send the spans still buffered and stop tracing this process (a
    later :func:`init_tracing` may start it again)."""
    global _active
    if _active is None:
        return
    active, _active = _active, None
    for instrumentor in reversed(_also_instrumented):
        instrumentor.uninstrument()
    SQLAlchemyInstrumentor().uninstrument()
    FlaskInstrumentor.uninstrument_app(active.app)
    active.provider.shutdown()


def span_stream(chunks: Generator[bytes], name: str) -> Generator[bytes]:
    """``chunks`` inside a span of their own, a child of the current one,
    that ends when the stream does: at its end, on an error, or when the
    client hangs up and the server closes it.

    A streamed response outlives its view, and the request's span ends with
    the view. The span is current only while a chunk is made, never between
    two (the server's code runs then), so nothing leaks into it. Untraced,
    ``chunks`` is returned as it is.
    """
    if _active is None:
        return chunks
    span = _active.provider.get_tracer(__name__).start_span(name)

    def streamed() -> Generator[bytes]:
        try:
            while True:
                token = context.attach(trace.set_span_in_context(span))
                try:
                    chunk = next(chunks)
                except StopIteration:
                    return
                except Exception as exc:
                    _record_failure(span, exc)
                    raise
                finally:
                    context.detach(token)
                yield chunk
        finally:
            chunks.close()
            span.end()

    return streamed()


@contextmanager
def database_span(name: str, system: str, operation: str) -> Iterator[None]:
    """A span for a statement the instrumentations do not see (psycopg's
    COPY, run on the driver's connection), a child of the current span.

    Never made current, so it may stay open across the yields of a
    generator. It carries no statement text: COPY's has the values in it.
    """
    if _active is None:
        yield
        return
    span = _active.provider.get_tracer(__name__).start_span(
        name,
        kind=SpanKind.CLIENT,
        attributes={"db.system": system, "db.operation": operation},
    )
    try:
        yield
    except Exception as exc:
        _record_failure(span, exc)
        raise
    finally:
        span.end()


def _record_failure(span: Span, error: Exception) -> None:
    """Mark ``span`` failed by ``error``, named by its class only."""
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, type(error).__name__))

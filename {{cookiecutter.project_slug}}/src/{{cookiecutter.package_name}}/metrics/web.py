"""Request counts, latencies and requests in flight, served at ``/metrics``.

Requests are labelled by Flask endpoint name, never by path: ``/api/events/1``
and ``/api/events/2`` are one series, and a client probing random URLs adds
none (everything that matches no route is ``unmatched``). Methods outside
the standard set count as ``other`` for the same reason.

Flask's ``request_started`` and ``request_finished`` signals frame each
request, so every before-request hook, error handler and after-request hook
is inside the measurement, and requests answered by an error handler (404,
400, 500) are counted with the status the client got.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Flask, g, request, request_finished, request_started
from flask.signals import request_tearing_down
from flask.wrappers import Response
from prometheus_client import Counter, Gauge, Histogram

from .exposition import render

UNMATCHED = "unmatched"
OTHER_METHOD = "other"
METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)
LABELS = ("endpoint", "method", "status")
_STARTED = "_metrics_started"

REQUESTS = Counter(
    "http_requests", "HTTP requests answered, by endpoint, method and status.", LABELS
)
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time from receiving a request to its response, by endpoint, method and status.",
    LABELS,
)
# livesum: the sum over running processes only; a worker that dies
# mid-request takes its share with it (gunicorn's child_exit hook).
IN_PROGRESS = Gauge(
    "http_requests_in_progress",
    "Requests being handled right now, by endpoint and method.",
    ("endpoint", "method"),
    multiprocess_mode="livesum",
)


def endpoint_label() -> str:
    return request.endpoint or UNMATCHED


def method_label() -> str:
    method = request.method.upper()
    return method if method in METHODS else OTHER_METHOD


def _request_started(_app: Flask, **_extra: Any) -> None:
    # Routing is done by now: the endpoint is known.
    in_progress = IN_PROGRESS.labels(endpoint_label(), method_label())
    in_progress.inc()
    setattr(g, _STARTED, (time.perf_counter(), in_progress))


def _request_finished(_app: Flask, response: Response, **_extra: Any) -> None:
    labels = (endpoint_label(), method_label(), str(response.status_code))
    REQUESTS.labels(*labels).inc()
    started = g.get(_STARTED)
    if started is not None:
        LATENCY.labels(*labels).observe(time.perf_counter() - started[0])


def _request_tearing_down(_app: Flask, **_extra: Any) -> None:
    started = g.pop(_STARTED, None)
    if started is not None:
        started[1].dec()


def metrics_view() -> Response:
    body, content_type = render(request.headers.get("Accept"))
    return Response(body, content_type=content_type)


def init_app(app: Flask) -> None:
    """Count this app's requests and serve ``/metrics``, unless
    ``METRICS_ENABLED`` is off."""
    if not app.config["METRICS_ENABLED"]:
        return
    request_started.connect(_request_started, app)
    request_finished.connect(_request_finished, app)
    request_tearing_down.connect(_request_tearing_down, app)
    app.add_url_rule("/metrics", endpoint="metrics", view_func=metrics_view)

"""Under gunicorn's gevent worker, name the request that holds the loop.

A gevent worker serves all its requests on one thread and switches between
them only when one waits (for PostgreSQL, a cache, a client). A request that
computes for long, or calls something that blocks without yielding (a C
library, a file on a slow disk), stalls every other request of the worker
meanwhile. gevent's monitor thread notices when the loop has not switched
for ``max_blocking_time``; each such episode becomes one WARNING with the
request's id, its endpoint and the blocking stack, and one count in
``event_loop_blocks_total`` by endpoint.

deploy/gunicorn.conf.py calls ``watch_event_loop`` in every gevent worker
(``GUNICORN_GEVENT_MAX_BLOCKING_SECONDS``, 0 for off).
"""

from __future__ import annotations

import logging
import time
import warnings
import weakref
from typing import Any

import gevent
from flask import Flask, g, request_started
from flask.signals import request_tearing_down
from gevent import events, getcurrent
from prometheus_client import Counter

from .logs import request_id_var
from .metrics.web import endpoint_label

log = logging.getLogger(__name__)

NOT_A_REQUEST = "none"
BLOCKS = Counter(
    "event_loop_blocks",
    "Times a greenlet held a gevent worker's loop for longer than "
    "GUNICORN_GEVENT_MAX_BLOCKING_SECONDS, by the endpoint it served.",
    ("endpoint",),
)

# What each greenlet is serving: the request's ``g`` (its request id is set
# there by a before_request hook, after this is recorded) and endpoint. The
# monitor thread reads it because greenlet refuses to read the context
# variables of a greenlet running in another thread.
_serving: weakref.WeakKeyDictionary[Any, tuple[Any, str]] = weakref.WeakKeyDictionary()
_watching = False


def _remember_request(_app: Flask, **_extra: Any) -> None:
    _serving[getcurrent()] = (g._get_current_object(), endpoint_label())


def _forget_request(_app: Flask, **_extra: Any) -> None:
    _serving.pop(getcurrent(), None)


def blocked_stack(report: list[str]) -> str:
    """The blocking thread's stack out of gevent's report (the lines after
    its "Blocked Stack" heading), without the greenlet tree around it."""
    for index, line in enumerate(report[:-1]):
        if line.startswith("Blocked Stack"):
            return report[index + 1].rstrip()
    return "(no stack in the report)"


class BlockReporter:
    """Subscriber of gevent's events; runs in the monitor thread.

    The monitor reports again at every check while the same greenlet keeps
    the loop: reports of one greenlet less than ``episode_gap`` seconds
    apart (a second, or three checks when they are slower) are one
    episode, logged and counted once.
    """

    def __init__(self, max_blocking_seconds: float) -> None:
        self.max_blocking_seconds = max_blocking_seconds
        self.episode_gap = max(1.0, 3 * max_blocking_seconds)
        self._last: tuple[weakref.ref[Any], float] | None = None

    def __call__(self, event: object) -> None:
        if not isinstance(event, events.EventLoopBlocked):
            return
        now = time.monotonic()
        last, self._last = self._last, (weakref.ref(event.greenlet), now)
        if (
            last is not None
            and last[0]() is event.greenlet
            and now - last[1] < self.episode_gap
        ):
            return
        try:
            self.report(event.greenlet, list(event.info))
        except Exception:
            # An exception here would reach gevent's hub from a foreign
            # thread and can end the worker.
            log.exception("could not report a blocked event loop")

    def report(self, greenlet: Any, info: list[str]) -> None:
        holder, endpoint = _serving.get(greenlet, (None, NOT_A_REQUEST))
        request_id = getattr(holder, "request_id", "-") if holder else "-"
        BLOCKS.labels(endpoint).inc()
        # The log record takes its request id from this thread's context.
        token = request_id_var.set(request_id)
        try:
            log.warning(
                "the event loop was held for over %gs by %s (endpoint %s); "
                "every other request of this worker waited. Blocking stack:\n%s",
                self.max_blocking_seconds,
                f"request {request_id}" if holder else "code outside a request",
                endpoint,
                blocked_stack(info),
            )
        finally:
            request_id_var.reset(token)


def watch_event_loop(max_blocking_seconds: float) -> None:
    """Start gevent's monitor thread in this (gevent-patched) process and
    report through the logs and metrics instead of gevent's stderr dump.

    Call in the thread running the hub (gunicorn's post_worker_init), once.
    """
    global _watching  # one monitor per process
    if _watching:
        return
    _watching = True
    gevent.config.max_blocking_time = max_blocking_seconds
    gevent.config.monitor_thread = True
    gevent.config.print_blocking_reports = False
    # Memory monitoring needs psutil; gunicorn's max_requests bounds growth.
    warnings.filterwarnings("ignore", message="Unable to monitor memory usage")
    events.subscribers.append(BlockReporter(max_blocking_seconds))
    request_started.connect(_remember_request, weak=False)
    request_tearing_down.connect(_forget_request, weak=False)
    gevent.get_hub().start_periodic_monitoring_thread()

"""Celery task counts by task name and state, and the worker's ``/metrics``.

States follow a task through the worker: ``received`` (the worker took the
message), ``started`` (its body begins), then ``succeeded``, ``failed`` or
``retried`` (it raised and was scheduled again). ``received`` is counted in
the worker's main process, the rest in the pool process that ran the task,
so with the prefork pool the worker needs ``PROMETHEUS_MULTIPROC_DIR`` to
add them up.

The worker serves its metrics on ``WORKER_METRICS_HOST``:``WORKER_METRICS_PORT``
(off when the port is 0), from its main process.
"""

from __future__ import annotations

import logging
from typing import Any
from wsgiref.simple_server import WSGIServer

from celery.concurrency import get_implementation
from celery.concurrency.prefork import TaskPool as PreforkPool
from celery.signals import (
    task_failure,
    task_prerun,
    task_received,
    task_retry,
    task_success,
    worker_init,
    worker_shutdown,
)
from prometheus_client import Counter, start_http_server

from .exposition import (
    MULTIPROC_DIR_VARIABLE,
    multiprocess_dir,
    registry,
    reset_directory,
)

log = logging.getLogger(__name__)

TASKS = Counter(
    "celery_tasks",
    "Celery task state changes, by task name and state.",
    ("task", "state"),
)
_servers: list[WSGIServer] = []


def count(task_name: str | None, state: str) -> None:
    TASKS.labels(task_name or "unknown", state).inc()


def _received(request: Any = None, **_extra: Any) -> None:
    count(getattr(request, "name", None), "received")


def _started(sender: Any = None, **_extra: Any) -> None:
    count(getattr(sender, "name", None), "started")


def _succeeded(sender: Any = None, **_extra: Any) -> None:
    count(getattr(sender, "name", None), "succeeded")


def _failed(sender: Any = None, **_extra: Any) -> None:
    count(getattr(sender, "name", None), "failed")


def _retried(sender: Any = None, **_extra: Any) -> None:
    count(getattr(sender, "name", None), "retried")


def uses_child_processes(pool: Any) -> bool:
    """True for the prefork pool (the default), whose tasks run in other
    processes than the one serving the metrics."""
    implementation = get_implementation(pool)
    return isinstance(implementation, type) and issubclass(implementation, PreforkPool)


def _serve_metrics(sender: Any = None, **_extra: Any) -> None:
    """In the worker's main process, before its pool starts: empty the
    metrics directory of an earlier run and serve ``/metrics``."""
    config = sender.app.flask_app.config
    port = config["WORKER_METRICS_PORT"]
    if not port:
        return
    directory = multiprocess_dir()
    if directory is None and uses_child_processes(sender.pool_cls):
        log.error(
            "WORKER_METRICS_PORT is set but %s is not: task counts of the "
            "prefork pool processes would be lost, so no metrics are served",
            MULTIPROC_DIR_VARIABLE,
        )
        return
    if directory is not None:
        reset_directory(directory)
    host = config["WORKER_METRICS_HOST"]
    server, _thread = start_http_server(port, addr=host, registry=registry())
    _servers.append(server)
    log.info("worker metrics on http://%s:%s/metrics", host, port)


def stop_serving(**_extra: Any) -> None:
    """Close the worker's metrics server (on warm shutdown)."""
    while _servers:
        server = _servers.pop()
        server.shutdown()
        server.server_close()


def connect_signals() -> None:
    """Connect the handlers once per process, however many apps are built."""
    for signal, handler in (
        (task_received, _received),
        (task_prerun, _started),
        (task_success, _succeeded),
        (task_failure, _failed),
        (task_retry, _retried),
        (worker_init, _serve_metrics),
        (worker_shutdown, stop_serving),
    ):
        signal.connect(handler, weak=False, dispatch_uid=f"metrics{handler.__name__}")

"""Celery bound to the Flask app: every task runs inside an app context.

:func:`init_celery` follows Flask's documented pattern. The Celery app is
configured by :func:`celery_config` from the app's settings and uses
:class:`AppTask`, whose
call pushes an app context, so tasks see ``current_app`` and config, and
their database session is removed when they end, on success, failure and
retry alike. Arguments must be plain values (ids, strings, numbers): a
model instance or a context-local proxy is refused where it is sent. The
request id of the sender travels in the message headers and is on every
log record of the task.

Features declare what Celery needs to know of their tasks on the tasks
themselves: ``routed_to="..."`` for a queue of their own, ``run_every=...``
for beat to send them periodically. :func:`init_celery` collects both from
the registered tasks, so this module names no feature.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kombu.pools
import redis.exceptions
import sentry_sdk
from celery import Celery, Task
from celery import current_app as current_celery
from celery.signals import (
    setup_logging,
    worker_process_init,
    worker_process_shutdown,
)
from flask import Flask, current_app
from kombu import Queue
from kombu.exceptions import OperationalError as BrokerError
from opentelemetry.instrumentation.celery import CeleryInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from sentry_sdk.integrations.celery import CeleryIntegration
from sqlalchemy.exc import OperationalError as DatabaseOperationalError

from . import logs, sentry, tracing
from .background import ensure_plain_call
from .extensions import db
from .metrics import tasks as task_metrics
from .outages import Outage

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "request_id"
# The sender's (account id, token id), for the task's log lines only: what
# data a task may touch comes from its arguments.
IDENTITY_HEADER = "identity"

# Errors worth another try: the database or the broker was briefly away.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    DatabaseOperationalError,
    BrokerError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)
# What sending a message raises when the broker cannot be reached.
ENQUEUE_ERRORS: tuple[type[Exception], ...] = (
    BrokerError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
)
# Sends that failed because Redis was away: logged once per outage.
BROKER = Outage("broker")

# Failed tasks reach Sentry, and traces follow tasks and Redis commands, in
# every process that imports this module: create_app's does, before it
# starts Sentry, and tracing starts later still (after the fork).
sentry.integrate_also(CeleryIntegration())
tracing.instrument_also(CeleryInstrumentor(), RedisInstrumentor())


def sender_request_id() -> str:
    """The current request's id, or a new one for work started elsewhere."""
    request_id = logs.request_id_var.get()
    return request_id if request_id != "-" else uuid.uuid4().hex


class AppTask(Task):
    """Runs inside an app context; refuses non-plain arguments; carries the
    request id and the caller's ids; retries transient errors with backoff
    and jitter."""

    autoretry_for = TRANSIENT_ERRORS
    retry_backoff = True
    retry_backoff_max = 300
    retry_jitter = True
    max_retries = 5

    def apply_async(
        self,
        args: Any = None,
        kwargs: Any = None,
        **options: Any,
    ) -> Any:
        ensure_plain_call(tuple(args or ()), dict(kwargs or {}))
        headers = dict(options.pop("headers", None) or {})
        headers.setdefault(REQUEST_ID_HEADER, sender_request_id())
        headers.setdefault(IDENTITY_HEADER, list(logs.identity_var.get()))
        return super().apply_async(args, kwargs, headers=headers, **options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        with self.sender_context():
            tag_sentry_scope()
            with self.app.flask_app.app_context():
                return self.run(*args, **kwargs)

    @contextmanager
    def sender_context(self) -> Iterator[None]:
        """The sender's request id and identity on this task's log lines,
        for its body and for its handlers (``on_failure``), which Celery
        calls after the body has returned."""
        request_id = self.request.get(REQUEST_ID_HEADER) or sender_request_id()
        token = logs.request_id_var.set(request_id)
        identity = self.request.get(IDENTITY_HEADER) or logs.ANONYMOUS
        identity_token = logs.identity_var.set((str(identity[0]), str(identity[1])))
        try:
            yield
        finally:
            logs.identity_var.reset(identity_token)
            logs.request_id_var.reset(token)


def tag_sentry_scope() -> None:
    """Tag whatever Sentry reports for the running task.

    Celery's integration reports a failed task after the task's own call has
    returned and its ids are unset, so they go on the task's Sentry scope
    (one per task run) instead.
    """
    if sentry_sdk.get_client().is_active():
        sentry_sdk.set_tags(sentry.context_tags())


def celery_config(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Celery's settings (lowercase names), from the app's ``CELERY_*``
    settings (config.py checks them).

    Delivery is at-least-once: a task is acknowledged after it finishes and
    requeued if its worker dies, so tasks must be idempotent. Redis hands an
    unacknowledged message to another worker after ``visibility_timeout``,
    which must outlast the hard time limit or long tasks run twice.
    """
    # Sending a task waits on Redis at most twice (connecting, one command),
    # each wait bounded by half the budget, and is not retried: a request
    # that enqueues work answers 503 within CELERY_BROKER_TIMEOUT_SECONDS
    # when Redis is down or frozen, instead of holding its thread.
    wait = settings["CELERY_BROKER_TIMEOUT_SECONDS"] / 2
    transport_options: dict[str, Any] = {
        "visibility_timeout": settings["CELERY_VISIBILITY_TIMEOUT"],
        "socket_timeout": wait,
        "socket_connect_timeout": wait,
        # Lets the kernel notice a peer gone without closing (a partition,
        # a dead host) on long-lived idle connections.
        "socket_keepalive": True,
        # Connecting to send is tried once, without kombu's 2 s pause and
        # second try; the worker's own reconnect loop is not affected.
        "max_retries": 0,
    }
    backend_options: dict[str, Any] = {}
    key_prefix = settings["CELERY_KEY_PREFIX"]
    if key_prefix:
        transport_options["global_keyprefix"] = key_prefix
        backend_options["global_keyprefix"] = key_prefix
    return {
        "broker_url": settings["CELERY_BROKER_URL"],
        "result_backend": settings["CELERY_RESULT_BACKEND"],
        "broker_transport_options": transport_options,
        "result_backend_transport_options": backend_options,
        "broker_connection_timeout": wait,
        "redis_socket_connect_timeout": wait,
        "redis_socket_timeout": wait,
        "redis_socket_keepalive": True,
        "broker_connection_retry_on_startup": True,
        # A worker that lost Redis keeps trying to reconnect, however long
        # the outage (the default gives up after 100 tries).
        "broker_connection_max_retries": None,
        # No retry: redis-py already replaces a pooled connection that a
        # restarted Redis closed, and a retry would double the wait.
        "task_publish_retry": False,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": settings["CELERY_TASK_TIME_LIMIT"],
        "task_soft_time_limit": settings["CELERY_TASK_SOFT_TIME_LIMIT"],
        "task_track_started": True,
        "result_expires": settings["CELERY_RESULT_EXPIRES"],
        "worker_hijack_root_logger": False,
        "worker_max_tasks_per_child": settings["CELERY_MAX_TASKS_PER_CHILD"] or None,
        "task_default_queue": "default",
    }


def local_broker_settings(instance_path: str) -> dict[str, Any]:
    """A broker and result store in files under ``instance/celery``.

    Lets ``make run`` use a real worker with no Redis server. It is for one
    machine and development only: workers poll the folder, and a message a
    dead worker held is not handed to another. Every folder is named: kombu
    otherwise keeps its broadcast table (``control_folder``) in ``control/``
    under the working directory.
    """
    root = Path(instance_path) / "celery"
    for folder in ("queue", "processed", "results", "control"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    return {
        "broker_url": "filesystem://",
        "broker_transport_options": {
            "data_folder_in": str(root / "queue"),
            "data_folder_out": str(root / "queue"),
            "processed_folder": str(root / "processed"),
            "control_folder": str(root / "control"),
            "store_processed": False,
            "polling_interval": 0.5,
        },
        "result_backend": f"file://{root / 'results'}",
    }


def task_routes(celery: Celery) -> dict[str, dict[str, str]]:
    """A route for every task declared with ``routed_to``: the queue it is
    sent to instead of the default one. (Celery's own ``queue`` task
    attribute is deprecated in favour of routes.)"""
    return {
        task.name: {"queue": task.routed_to}
        for task in celery.tasks.values()
        if getattr(task, "routed_to", None)
    }


def task_queues(celery: Celery, routes: dict[str, dict[str, str]]) -> list[Queue]:
    """The default queue and every queue a route names."""
    names = {celery.conf.task_default_queue}
    names.update(route["queue"] for route in routes.values())
    return [Queue(name) for name in sorted(names)]


def beat_schedule(celery: Celery) -> dict[str, Any]:
    """An entry, named after its task, for every task declared with
    ``run_every``: beat sends it that often."""
    return {
        task.name: {"task": task.name, "schedule": task.run_every}
        for task in celery.tasks.values()
        if getattr(task, "run_every", None)
    }


def init_celery(app: Flask) -> Celery:
    settings = celery_config(app.config)
    if settings.get("broker_url"):
        log.info("Celery broker: Redis (%s)", redact(settings["broker_url"]))
    else:
        settings.update(local_broker_settings(app.instance_path))
        log.info(
            "Celery broker: local files in %s/celery (no REDIS_URL; development "
            "only, one machine)",
            app.instance_path,
        )
    celery = Celery(app.name, task_cls=AppTask)
    celery.config_from_object(settings)
    # Outlives Redis dropping mid-task (see worker_consumer).
    celery.conf.worker_consumer = f"{__package__}.worker_consumer:Consumer"
    # The features' tasks are imported by now (create_app imports the
    # features): reading them here finalizes the app with all of them.
    routes = task_routes(celery)
    celery.conf.task_routes = routes
    celery.conf.task_queues = task_queues(celery, routes)
    celery.conf.beat_schedule = beat_schedule(celery)
    celery.conf.beat_schedule_filename = str(
        Path(app.instance_path) / "celerybeat-schedule"
    )
    celery.flask_app = app
    task_metrics.connect_signals()
    celery.set_default()
    app.extensions["celery"] = celery
    return celery


def redact(url: str) -> str:
    """A broker URL without its password, fit for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}" if user else f"{scheme}{sep}***@{host}"


def close_celery(celery: Celery) -> None:
    """Close the broker and result-store connections of this process.

    A process with one app never needs this; code that builds apps
    repeatedly (tests, scripts) calls it so sockets do not pile up. kombu
    shares broker connection pools across apps of a process, so those are
    reset as a whole.
    """
    kombu.pools.reset()
    backend = celery.backend
    consumer = getattr(backend, "result_consumer", None)
    if consumer is not None:
        consumer.stop()
    client = getattr(backend, "client", None)
    if client is not None:
        client.connection_pool.disconnect()
    celery.close()


def enqueue(task: Task, /, *args: Any, task_id: str | None = None) -> Any:
    """Send ``task`` through the Celery app of the current Flask app.

    Gives up within ``CELERY_BROKER_TIMEOUT_SECONDS`` when Redis is down or
    frozen, raising one of ``ENQUEUE_ERRORS``; the first failure of an
    outage is logged, the rest only counted.
    """
    celery: Celery = current_app.extensions["celery"]
    try:
        sent = celery.tasks[task.name].apply_async(args, task_id=task_id)
    except ENQUEUE_ERRORS as exc:
        BROKER.failed(exc)
        raise
    BROKER.answered()
    return sent


@setup_logging.connect(weak=False)
def _use_app_logging(**_kwargs: Any) -> None:
    """Keep Celery's worker from replacing the app's logging setup.

    Connecting to this signal is how Celery is told not to configure logging
    itself; ``create_app`` has already set it up from the app's config.
    """


# The worker's main process imports this module before it forks its pool.
_IMPORTING_PID = os.getpid()


@worker_process_init.connect(weak=False)
def _own_database_connections(**_kwargs: Any) -> None:
    """Give a new pool process database connections of its own.

    The worker's main process uses the database too: it runs ``on_failure``
    of a task killed at the hard time limit. A pool process forked after
    that inherits the open connections, and two processes talking over one
    socket corrupt it. SQLAlchemy's recipe: the child forgets the inherited
    pool without closing it (the parent still owns those sockets). The solo
    pool sends this signal too, in the worker's own process: nothing was
    inherited there, and its connections are its own to close.
    """
    if os.getpid() == _IMPORTING_PID:
        return
    flask_app = getattr(current_celery, "flask_app", None)
    if flask_app is not None:
        with flask_app.app_context():
            db.engine.dispose(close=False)


@worker_process_init.connect(weak=False)
def _start_tracing(**_kwargs: Any) -> None:
    """Trace the tasks of this pool process (see tracing.py): set up here,
    after the fork, so each pool process has an exporter of its own."""
    flask_app = getattr(current_celery, "flask_app", None)
    if flask_app is not None:
        tracing.init_tracing(flask_app, "worker")


@worker_process_shutdown.connect(weak=False)
def _flush_traces(**_kwargs: Any) -> None:
    """Send the last spans of a pool process before it exits."""
    tracing.shutdown_tracing()

"""Error reports to Sentry, sent only when ``SENTRY_DSN`` is set.

``create_app`` calls :func:`init_sentry`, so every process that builds the
app reports: gunicorn workers{% if cookiecutter.use_celery == "y" %}, the Celery worker (``worker.py`` builds its
app when Celery imports it, at start-up, before the pool forks){% endif %} and CLI
commands. Sentry's client belongs to the process: the first app with a DSN
starts it and later apps reuse it, so a process that builds many apps
(tests, scripts) does not start a client per app. With gunicorn's
``preload_app`` the client is started in the master; the SDK starts its
sending thread again in each forked worker.

Only faults are reported: an unhandled exception in a request{% if cookiecutter.use_celery == "y" %} or a task{% endif %}.
An error the API answers on purpose (a 4xx problem response) is not one.
Every event carries the ``request_id`` tag (and ``account_id`` and
``token_id`` of an authenticated caller), the id on the response header
and on every log line of the request{% if cookiecutter.use_celery == "y" %} or task{% endif %}, so an event leads to its
logs; and, when it is traced (tracing.py), the ``trace_id`` tag, so it
leads to its trace too. Personal data stays in: no cookies, authorization
headers or client addresses are sent, not even inside a stack frame's
variables.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sentry_sdk
from opentelemetry import trace
from sentry_sdk.integrations import Integration
{%- if cookiecutter.use_celery == "y" %}
from sentry_sdk.integrations.celery import CeleryIntegration
{%- endif %}
from sentry_sdk.integrations.flask import FlaskIntegration
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.integrations.sqlalchemy import SqlalchemyIntegration
from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber
from sentry_sdk.types import Event, Hint

from .logs import ANONYMOUS, identity_var, request_id_var

# Where a SQLAlchemy error's message ends and its statement begins.
SQL_MARK = "\n[SQL: "
REQUEST_ID_TAG = "request_id"
ACCOUNT_ID_TAG = "account_id"
TOKEN_ID_TAG = "token_id"  # noqa: S105 - a tag name, not a secret
TRACE_ID_TAG = "trace_id"
# Sentry's denylist names headers as they are sent; stack frame variables
# show them as WSGI environ keys (Flask's own frames hold the environ).
WSGI_DENYLIST = [
    "http_authorization",
    "http_proxy_authorization",
    "http_cookie",
    "http_x_api_key",
    "http_x_csrftoken",
    "http_x_forwarded_for",
    "http_x_real_ip",
]


def integrations() -> list[Integration]:
    """Named rather than left to auto-detection, so what reports is plain."""
    return [
        FlaskIntegration(),
{%- if cookiecutter.use_celery == "y" %}
        CeleryIntegration(),
{%- endif %}
        SqlalchemyIntegration(),
        # Records at INFO and above become breadcrumbs, ERROR ones events.
        LoggingIntegration(),
    ]


def event_scrubber() -> EventScrubber:
    """Sentry's scrubber, also inside nested values (the environ in a stack
    frame) and under WSGI names. Client addresses count as personal data."""
    return EventScrubber(denylist=[*DEFAULT_DENYLIST, *WSGI_DENYLIST], recursive=True)


def init_sentry(config: Mapping[str, Any]) -> bool:
    """Start reporting with ``config``'s ``SENTRY_*`` settings, once per
    process. Returns whether this call started it.

    ``SENTRY_TRANSPORT`` is a config key, not an environment variable: a
    :class:`sentry_sdk.transport.Transport` to use instead of HTTP (the
    tests keep events in memory with one).
    """
    dsn = config.get("SENTRY_DSN")
    if not dsn or sentry_sdk.get_client().is_active():
        return False
    sentry_sdk.init(
        dsn=dsn,
        environment=config["SENTRY_ENVIRONMENT"],
        release=config["SENTRY_RELEASE"],
        traces_sample_rate=config["SENTRY_TRACES_SAMPLE_RATE"],
        # send_default_pii is left unset, which is off: no cookies,
        # authorization headers or client addresses are sent. (Newer SDKs
        # deprecate the flag; a ``data_collection`` option can widen this.)
        event_scrubber=event_scrubber(),
        integrations=integrations(),
        before_send=tag_event,
        before_send_transaction=tag_event,
        transport=config.get("SENTRY_TRANSPORT"),
    )
    return True


def tag_event(event: Event, _hint: Hint) -> Event:
    """Tag an event with the request id it was raised under, its trace id
    if traced, and the account and token ids of the caller, if any (never
    the token); keep the exceptions' SQL statements and parameters out of
    it."""
    for exception in event.get("exception", {}).get("values", []):
        if isinstance(exception.get("value"), str):
            exception["value"] = exception["value"].split(SQL_MARK)[0]
    tags = event.setdefault("tags", {})
    request_id = request_id_var.get()
    if request_id != "-":
        tags[REQUEST_ID_TAG] = request_id
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        tags[TRACE_ID_TAG] = trace.format_trace_id(span.trace_id)
    identity = identity_var.get()
    if identity != ANONYMOUS:
        tags[ACCOUNT_ID_TAG], tags[TOKEN_ID_TAG] = identity
    return event
{%- if cookiecutter.use_celery == "y" %}


def tag_task(request_id: str) -> None:
    """Tag whatever Sentry reports for the running task.

    Celery's integration reports a failed task after the task's own call has
    returned and its ids are unset, so they go on the task's Sentry scope
    (one per task run) instead.
    """
    if not sentry_sdk.get_client().is_active():
        return
    sentry_sdk.set_tag(REQUEST_ID_TAG, request_id)
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        sentry_sdk.set_tag(TRACE_ID_TAG, trace.format_trace_id(span.trace_id))
    identity = identity_var.get()
    if identity != ANONYMOUS:
        sentry_sdk.set_tag(ACCOUNT_ID_TAG, identity[0])
        sentry_sdk.set_tag(TOKEN_ID_TAG, identity[1])
{%- endif %}

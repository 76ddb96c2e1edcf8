"""Error reports to Sentry, sent only when ``SENTRY_DSN`` is set.

``create_app`` calls :func:`init_sentry`, so every process that builds the
app reports: gunicorn workers, CLI commands and any other process that
runs the app's work. Sentry's client belongs to the process: the first app
with a DSN starts it and later apps reuse it, so a process that builds many
apps (tests, scripts) does not start a client per app. With gunicorn's
``preload_app`` the client is started in the master; the SDK starts its
sending thread again in each forked worker.

Only faults are reported: an unhandled exception in a request (or in other
work a feature reports, through an integration it adds with
:func:`integrate_also`).
An error the API answers on purpose (a 4xx problem response) is not one.
Every event carries the ``request_id`` tag (and ``account_id`` and
``token_id`` of an authenticated caller), the id on the response header
and on every log line of the request, so an event leads to its
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
# Integrations features add (integrate_also), besides the ones named below.
_also_integrated: list[Integration] = []


def integrate_also(integration: Integration) -> None:
    """Have Sentry use this integration too, from the next :func:`init_sentry`
    on (a feature's library: a task queue). Once per integration."""
    if all(type(known) is not type(integration) for known in _also_integrated):
        _also_integrated.append(integration)


def integrations() -> list[Integration]:
    """Named rather than left to auto-detection, so what reports is plain."""
    return [
        FlaskIntegration(),
        *_also_integrated,
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


def context_tags() -> dict[str, str]:
    """The request id of the running request or task, its trace id if
    traced, and the account and token ids of the caller, if any (never the
    token), as Sentry tags."""
    tags = {}
    request_id = request_id_var.get()
    if request_id != "-":
        tags[REQUEST_ID_TAG] = request_id
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        tags[TRACE_ID_TAG] = trace.format_trace_id(span.trace_id)
    identity = identity_var.get()
    if identity != ANONYMOUS:
        tags[ACCOUNT_ID_TAG], tags[TOKEN_ID_TAG] = identity
    return tags


def tag_event(event: Event, _hint: Hint) -> Event:
    """Tag an event with ``context_tags``; keep the exceptions' SQL
    statements and parameters out of it."""
    for exception in event.get("exception", {}).get("values", []):
        if isinstance(exception.get("value"), str):
            exception["value"] = exception["value"].split(SQL_MARK)[0]
    event.setdefault("tags", {}).update(context_tags())
    return event

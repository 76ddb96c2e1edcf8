"""Logging to stdout: JSON lines in production, readable lines elsewhere.

Every record carries ``request_id``: the id of the HTTP request (or, later,
the task) it was logged under, ``"-"`` outside one; and ``account_id`` and
``token_id`` of the caller, ``"-"`` when there is none. The id lives in a
context variable, so it follows the code that handles the request and never
leaks into another thread's records. When the request or task is traced
(tracing.py), ``trace_id`` and ``span_id`` name its trace and current span,
as the tracing backend shows them; ``"-"`` otherwise.

No line carries SQL: SQLAlchemy's errors print their statement and its bound
parameters (user data, sometimes secrets), so wherever one appears, in the
message or a traceback, its text is replaced by :func:`describe`.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from contextvars import ContextVar, Token
from json import dumps as json_string
from typing import Any, TextIO, TypeVar

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter
from sqlalchemy.exc import StatementError

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
# (account id, token id) of an authenticated request; never the token itself.
ANONYMOUS = ("-", "-")
identity_var: ContextVar[tuple[str, str]] = ContextVar("identity", default=ANONYMOUS)

TEXT_FORMAT = (
    "%(asctime)s %(levelname)-8s [%(request_id)s account=%(account_id)s] "
    "%(name)s: %(message)s"
)
JSON_FIELDS = (
    "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s "
    "%(account_id)s %(token_id)s %(trace_id)s %(span_id)s"
)

T = TypeVar("T")

_HANDLER_NAME = "app-stdout"
_base_factory = logging.getLogRecordFactory()


def _record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    record.request_id = request_id_var.get()
    record.account_id, record.token_id = identity_var.get()
    span = trace.get_current_span().get_span_context()
    if span.is_valid:
        record.trace_id = trace.format_trace_id(span.trace_id)
        record.span_id = trace.format_span_id(span.span_id)
    else:
        record.trace_id = record.span_id = "-"
    return record


def unbind(var: ContextVar[T], token: Token[T] | None, outside: T) -> None:
    """Undo ``var.set`` that returned ``token`` (if any). Torn down from
    another context (a streamed response finishing), ``var`` is set to
    ``outside`` instead: the value it has outside any request."""
    if token is None:
        return
    try:
        var.reset(token)
    except ValueError:
        var.set(outside)


class StdoutHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stdout`` is when a record is emitted, so a
    process manager or test runner that swaps stdout still gets the lines."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def describe(error: BaseException) -> str:
    """``Class: first line of the driver's message``, without statement text."""
    cause = getattr(error, "orig", None) or error
    message = str(cause).strip().splitlines()
    first = message[0] if message else ""
    return f"{type(cause).__name__}: {first}" if first else type(cause).__name__


def _statement_errors(record: logging.LogRecord) -> list[StatementError]:
    """SQLAlchemy errors in the record: its exception's chain and its args."""
    found: list[StatementError] = []
    seen: set[int] = set()
    pending: list[object] = [record.exc_info[1] if record.exc_info else None]
    if isinstance(record.args, Mapping):  # "%(exc)s" style, as task runners log
        pending += record.args.values()
    elif record.args:
        pending += record.args
    while pending:
        item = pending.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, StatementError):
            found.append(item)
        pending += [item.__cause__, item.__context__]
    return found


class _WithoutSQL(logging.Formatter):
    """Formats as the next class in line does, then swaps each SQLAlchemy
    error's text (statement and parameters) for :func:`describe`."""

    def format(self, record: logging.LogRecord) -> str:
        if isinstance(record.args, tuple) and any(
            isinstance(arg, StatementError) for arg in record.args
        ):
            # A copy: other handlers (a test runner's) get the record as is.
            record = logging.makeLogRecord(record.__dict__)
            record.args = tuple(
                describe(arg) if isinstance(arg, StatementError) else arg
                for arg in record.args or ()
            )
        text = super().format(record)
        for error in _statement_errors(record):
            # The driver's own error, chained in the traceback, may quote the
            # statement too (PostgreSQL's "LINE 1: SELECT ...").
            for shown in (error, error.orig):
                if shown is None or not str(shown):
                    continue
                full, short = str(shown), describe(shown)
                # As printed, and as a JSON string escapes it.
                text = text.replace(full, short)
                text = text.replace(json_string(full)[1:-1], json_string(short)[1:-1])
        return text


class TextFormatter(_WithoutSQL, logging.Formatter):
    """Readable lines, for development and tests."""


class JsonLineFormatter(_WithoutSQL, JsonFormatter):
    """One JSON object per line, for production."""


def make_formatter(json: bool) -> logging.Formatter:
    if json:
        return JsonLineFormatter(
            JSON_FIELDS,
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    return TextFormatter(TEXT_FORMAT)


def configure_logging(level: str = "INFO", *, json: bool = False) -> None:
    """Send the root logger to stdout; safe to call once per app.

    Replaces only the handler this function installed earlier, so handlers
    added by a test runner or a process manager are left alone.
    """
    logging.setLogRecordFactory(_record_factory)
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = StdoutHandler()
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(make_formatter(json))
    root.addHandler(handler)
    root.setLevel(level.upper())

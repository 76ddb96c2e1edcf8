"""Logging to stdout: JSON lines in production, readable lines elsewhere.

Every record carries ``request_id``: the id of the HTTP request (or, later,
the task) it was logged under, ``"-"`` outside one; and ``account_id`` and
``token_id`` of the caller, ``"-"`` when there is none. The id lives in a
context variable, so it follows the code that handles the request and never
leaks into another thread's records.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar, Token
from typing import Any, TextIO, TypeVar

from pythonjsonlogger.json import JsonFormatter

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
    "%(account_id)s %(token_id)s"
)

T = TypeVar("T")

_HANDLER_NAME = "app-stdout"
_base_factory = logging.getLogRecordFactory()


def _record_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    record = _base_factory(*args, **kwargs)
    record.request_id = request_id_var.get()
    record.account_id, record.token_id = identity_var.get()
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


def make_formatter(json: bool) -> logging.Formatter:
    if json:
        return JsonFormatter(
            JSON_FIELDS,
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    return logging.Formatter(TEXT_FORMAT)


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

"""Request ids: accept a well-formed ``X-Request-ID`` or make one.

The id is returned on the response and set on the logging context variable,
so every log record of the request carries it.
"""

from __future__ import annotations

import re
import uuid

from flask import Flask, g, request
from flask.wrappers import Response

from ..logs import request_id_var, unbind

HEADER = "X-Request-ID"
VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def accept_or_generate(incoming: str | None) -> str:
    """Keep a client's id only when it is short and made of safe characters;
    anything else (too long, spaces, control characters) could forge or
    break log lines, so it is replaced."""
    if incoming and VALID_REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


def _bind_request_id() -> None:
    request_id = accept_or_generate(request.headers.get(HEADER))
    g.request_id = request_id
    g.request_id_token = request_id_var.set(request_id)


def _return_request_id(response: Response) -> Response:
    response.headers[HEADER] = g.get("request_id") or request_id_var.get()
    return response


def _unbind_request_id(_exc: BaseException | None) -> None:
    unbind(request_id_var, g.pop("request_id_token", None), "-")


def init_app(app: Flask) -> None:
    app.before_request(_bind_request_id)
    app.after_request(_return_request_id)
    app.teardown_request(_unbind_request_id)

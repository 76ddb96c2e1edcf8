"""Every error as ``application/problem+json`` (RFC 9457), never HTML.

HTTP errors keep their status and description. Anything else becomes a 500
whose body says nothing about the cause; the traceback goes to the log, with
the request id, and the client gets that id to quote.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, g, json
from flask.wrappers import Response
from pydantic import BaseModel, ConfigDict, Field
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.http import HTTP_STATUS_CODES

PROBLEM_MIMETYPE = "application/problem+json"


class APIError(HTTPException):
    """An HTTP error with machine-readable details, e.g. per-field errors."""

    def __init__(
        self,
        code: int,
        description: str,
        *,
        errors: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__(description)
        self.code = code
        self.errors = errors


def problem(
    status: int, title: str, detail: str | None = None, **extra: Any
) -> Response:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    request_id = g.get("request_id")
    if request_id:
        body["request_id"] = request_id
    body.update({key: value for key, value in extra.items() if value is not None})
    return current_app.response_class(
        json.dumps(body), status=status, mimetype=PROBLEM_MIMETYPE
    )


def _title(code: int | None) -> str:
    return HTTP_STATUS_CODES.get(code or 500, "Error")


def handle_http_exception(error: HTTPException) -> Response:
    code = error.code or 500
    response = problem(
        code,
        _title(code),
        error.description,
        errors=getattr(error, "errors", None),
    )
    # Keep headers the exception carries (Allow on 405, Retry-After on 429…).
    original = error.get_response()
    for name in ("Allow", "Retry-After", "WWW-Authenticate"):
        if name in original.headers:
            response.headers[name] = original.headers[name]
    return response


def handle_internal_error(error: InternalServerError) -> Response:
    # Flask already logged the original exception with its traceback.
    return problem(
        500,
        _title(500),
        "The server could not complete the request. Quote the request id when "
        "reporting this.",
    )


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(InternalServerError, handle_internal_error)


class Problem(BaseModel):
    """RFC 9457 problem details, as every error of the API answers."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    request_id: str | None = None
    errors: dict[str, list[str]] | None = Field(
        default=None, description="Each bad field and what is wrong with it."
    )

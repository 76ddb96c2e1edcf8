"""The API contract: each ``/api`` route declares its models once.

A view decorated with :func:`operation` names its input models in its
signature (``query: SomeQuery``, ``json: SomeBody``) and its output in the
decorator; spectree validates the input, serializes the output with
pydantic and writes the OpenAPI document from the same declarations, served
at ``/api/openapi.json``. Two things are ours, not spectree's: every error
stays ``application/problem+json`` (spectree's own error body never reaches
a client), and a response the view built itself (a streamed export, a file,
a problem) goes out as built instead of being read into memory to validate.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from functools import wraps
from importlib import metadata
from typing import Any

from flask import Blueprint, current_app, request
from flask.typing import ResponseReturnValue, RouteCallable
from flask.wrappers import Response
from pydantic import BaseModel, ValidationError
from spectree import Response as Responses
from spectree import SecurityScheme, SecuritySchemeData, SpecTree
from spectree.models import SecureType
from spectree.plugins.flask_plugin import FlaskPlugin

from .accounts import Scope, require
from .http.problems import PROBLEM_MIMETYPE, APIError, Problem
from .http.validation import field_errors, nul_errors

SERVICE = "{{ cookiecutter.project_slug }}"
TITLE = {{ cookiecutter.project_name | tojson }}
BEARER = "bearer"
DOCUMENT = "openapi_document"

# What each problem status means on any route that can give it.
PROBLEMS = {
    400: "The input is invalid; `errors` names each bad field.",
    401: "No valid bearer token.",
    403: "The token lacks the scope this route needs.",
    404: "No such resource for this account.",
    409: "The resource is not in a state that allows this.",
    413: "The request body is too large.",
    415: "The request body is not JSON.",
    429: "Too many requests; see Retry-After.",
    500: "An unexpected error; quote the request id.",
    503: "A dependency is unavailable; see Retry-After.",
}
# Every route can give these: the app's own failures, and the rate limits
# (nginx's on every /api/ request, the app's on every token: http/limits.py).
ALWAYS = (429, 500, 503)


class _Plugin(FlaskPlugin):
    """spectree's Flask plugin, sending a built response as it is."""

    def validate_response(
        self,
        resp: Any,
        resp_model: Responses | None,
        skip_validation: bool,
        force_resp_serialize: bool,
    ) -> tuple[Any, Any]:
        if isinstance(resp, Response):
            # A stream, a file or a problem: reading it to validate would
            # buffer a whole export in memory.
            return resp, None
        return super().validate_response(
            resp, resp_model, skip_validation, force_resp_serialize
        )


def _refuse_invalid(req: Any, _resp: Any, error: Exception | None, *_: Any) -> None:
    """Turn spectree's validation failure into the app's 400 problem."""
    if isinstance(error, ValidationError):
        what = "query" if req.method in ("GET", "HEAD") else "body"
        raise APIError(
            400, f"The request {what} is invalid.", errors=field_errors(error)
        )


def _refuse_bad_response(
    _req: Any, _resp: Any, error: Exception | None, *_: Any
) -> None:
    """A view's answer that breaks its own model is the app's bug: a logged
    500 problem, never spectree's error body."""
    if error is not None:
        raise RuntimeError(
            "the response does not match its documented model"
        ) from error


def _version() -> str:
    try:
        return metadata.version(SERVICE)
    except metadata.PackageNotFoundError:  # pragma: no cover - not installed
        return "0.0.0"


spec = SpecTree(
    backend=_Plugin,
    title=TITLE,
    version=_version(),
    mode="strict",
    validation_error_status=400,
    validation_error_model=Problem,
    naming_strategy=lambda model: model.__name__,
    nested_naming_strategy=lambda _parent, child: child,
    before=_refuse_invalid,
    after=_refuse_bad_response,
    security_schemes=[
        SecurityScheme(
            name=BEARER,
            data=SecuritySchemeData(
                type=SecureType.HTTP,
                scheme="bearer",
                description="An API token, from `flask tokens issue ACCOUNT`.",
            ),
        )
    ],
    security={BEARER: []},
    page_templates={},
)


def _checked_input(has_body: bool) -> None:
    """What every operation refuses before its models see the input: a body
    that is not a JSON object, and NUL characters anywhere (PostgreSQL
    cannot store them), in the body or the query string."""
    errors = nul_errors(request.args.to_dict(), "query")
    if errors:
        raise APIError(400, "The request query is invalid.", errors=errors)
    if not has_body or not (request.content_length or request.content_encoding):
        return
    data = request.get_json()  # 415 if not JSON, 400 if malformed
    if not isinstance(data, dict):
        raise APIError(400, "The request body must be a JSON object.")
    errors = nul_errors(data, "body")
    if errors:
        raise APIError(400, "The request body is invalid.", errors=errors)


def operation(
    operation_id: str,
    *,
    ok: tuple[int, type[BaseModel] | None],
    scope: Scope | None,
    problems: Iterable[int] = (),
    tag: str,
) -> Callable[[Callable[..., Any]], RouteCallable]:
    """Declare a route of the API: its operationId (a method name in
    generated clients), its success status and model, the scope its token
    needs (``None``: no bearer token, the route checks something else) and
    the problems it can answer besides the ones every route can."""
    status, model = ok

    def decorate(view: Callable[..., Any]) -> RouteCallable:
        hints = getattr(view, "__annotations__", {})
        has_body = "json" in hints
        codes = set(problems) | set(ALWAYS)
        if has_body:
            codes |= {400, 413, 415}
        if "query" in hints:
            codes.add(400)
        if scope is not None:
            codes |= {401, 403}
        success = {f"HTTP_{status}": model} if model is not None else {}
        responses = Responses(
            *([] if success else [f"HTTP_{status}"]),
            **success,
            **{f"HTTP_{code}": (Problem, PROBLEMS[code]) for code in sorted(codes)},
        )
        validated = spec.validate(
            resp=responses,
            operation_id=operation_id,
            tags=[tag],
            security=None if scope is not None else {},
        )(view)

        @wraps(validated)
        def checked(*args: Any, **kwargs: Any) -> ResponseReturnValue:
            _checked_input(has_body)
            return validated(*args, **kwargs)

        if scope is None:
            return checked
        return require(scope)(checked)

    return decorate


def document() -> dict[str, Any]:
    """The OpenAPI document, problem responses typed as problem+json."""
    cached: dict[str, Any] | None = current_app.extensions.get(DOCUMENT)
    if cached is None:
        cached = _as_problems(spec.spec)
        current_app.extensions[DOCUMENT] = cached
    return cached


def _as_problems(source: dict[str, Any]) -> dict[str, Any]:
    document = copy.deepcopy(source)
    for path in document["paths"].values():
        for op in path.values():
            for status, answer in op["responses"].items():
                content = answer.get("content", {})
                if int(status) >= 400 and "application/json" in content:
                    content[PROBLEM_MIMETYPE] = content.pop("application/json")
    return document


bp = Blueprint("openapi", __name__, url_prefix="/api")


@bp.get("/openapi.json")
def openapi_json() -> ResponseReturnValue:
    return document()

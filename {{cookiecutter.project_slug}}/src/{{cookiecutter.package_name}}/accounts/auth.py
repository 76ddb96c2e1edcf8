"""Bearer-token authentication for the API, with Flask-HTTPAuth.

Routes declare the scope they need with ``@require(Scope.READ)``; the view
then reads :func:`current_identity` once, at the edge, and passes its plain
``account_id`` on. A missing, malformed, unknown, expired or revoked token
is a 401 and a token without the scope a 403, both problem+json with the
``WWW-Authenticate`` challenge RFC 6750 describes. While the request runs,
the account and token ids are on every log line and Sentry event; the token
itself is never logged.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar, cast

from flask import Flask, current_app, g, request
from flask.wrappers import Response
from flask_httpauth import HTTPTokenAuth
from sqlalchemy.exc import SQLAlchemyError

from .. import logs
from ..http import limits
from ..http.problems import problem
from ..sqltypes import utcnow
from . import cli, services
from .services import Identity, Scope

F = TypeVar("F", bound=Callable[..., Any])

auth = HTTPTokenAuth(scheme="Bearer")
VERIFIED_TOKENS = "verified_tokens"


def require(scope: Scope) -> Callable[[F], F]:
    """Decorate a view: a valid token holding ``scope`` or no entry."""
    return cast("Callable[[F], F]", auth.login_required(role=str(scope)))


def current_identity() -> Identity:
    """The caller of a view decorated with :func:`require`."""
    identity = auth.current_user()
    if not isinstance(identity, Identity):
        raise RuntimeError("current_identity() outside a @require view")
    return identity


def identify() -> Identity | None:
    """The caller of this request, or None without a valid bearer token.

    Verified once per request and kept on ``g``: whatever asks after the
    route's ``@require`` gets the same answer without a second query.
    """
    if "identity_error" in g:
        raise g.identity_error
    if "identity" not in g:
        presented = auth.get_auth()
        secret = presented.token if presented is not None else None
        try:
            g.identity = _authenticate(secret) if secret else None
        except SQLAlchemyError as exc:
            g.identity_error = exc  # one wait per request on a database away
            raise
    identity: Identity | None = g.identity
    return identity


def _authenticate(secret: str) -> Identity | None:
    now = utcnow()
    verified: services.VerifiedTokens = current_app.extensions[VERIFIED_TOKENS]
    identity = verified.get(secret, now)
    if identity is None:
        identity = services.authenticate(
            secret,
            now=now,
            last_used_resolution=timedelta(
                seconds=current_app.config["TOKEN_LAST_USED_RESOLUTION_SECONDS"]
            ),
        )
        if identity is not None:
            verified.put(secret, identity)
    if identity is not None:
        g.identity_log_token = logs.identity_var.set(
            (str(identity.account_id), str(identity.token_id))
        )
    return identity


@auth.verify_token
def _verify(_secret: str) -> Identity | None:
    identity = identify()
    if identity is not None:
        limits.count_request(str(identity.token_id))
    return identity


@auth.get_user_roles
def _scopes(identity: Identity) -> list[str]:
    return sorted(identity.scopes)


@auth.error_handler
def _refuse(status: int) -> Response:
    if status == 403:
        response = problem(
            403, "Forbidden", "The token does not grant the scope this route needs."
        )
        response.headers["WWW-Authenticate"] = 'Bearer error="insufficient_scope"'
        return response
    limits.count_failed_authentication()  # a 429 instead, past the limit
    response = problem(
        401, "Unauthorized", "A valid bearer token is required: Authorization: Bearer."
    )
    # RFC 6750: name the error only when a token was presented.
    presented = request.headers.get("Authorization", "").strip() != ""
    challenge = 'Bearer realm="api"'
    if presented:
        challenge += ', error="invalid_token"'
    response.headers["WWW-Authenticate"] = challenge
    return response


def _forget_identity(_exc: BaseException | None) -> None:
    logs.unbind(logs.identity_var, g.pop("identity_log_token", None), logs.ANONYMOUS)


def init_app(app: Flask) -> None:
    app.extensions[VERIFIED_TOKENS] = services.VerifiedTokens(
        app.config["TOKEN_CACHE_SECONDS"]
    )
    app.teardown_request(_forget_identity)
    cli.init_app(app)

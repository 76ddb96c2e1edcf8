"""Abuse limits on ``/api/``, with Flask-Limiter.

nginx's ``limit_req`` stays the outer layer: it caps requests per address
before they reach a worker, but it cannot tell a failed authentication from
a good request, nor one token from another behind a shared address. So the
app adds two limits of its own, both answered with a 429 problem and
``Retry-After``:

- **Failed authentications per client address** (``RATELIMIT_FAILED_AUTH``):
  every 401 counts, and an address over the limit gets 429 on every
  ``/api/`` request without a valid token until its window ends. The token
  is verified first (once per request, see ``accounts.identify``): a caller
  with a valid one is no failed authentication, so its requests skip this
  limit and its storage round trip. (Guessing gains nothing from that: a
  token holds 238 random bits.)
- **Requests per token** (``RATELIMIT_PER_TOKEN``): one leaked or runaway
  client cannot take every worker. The bucket is the SHA-256 of the
  presented token (what ``api_tokens.token_hash`` stores), never the token.

The client address is ``request.remote_addr``: ProxyFix has already taken it
from the ``X-Forwarded-For`` entry the trusted proxies (``PROXY_HOPS``) set,
and ignores what a client wrote before it. Probes and metrics (``/healthz``,
``/readyz``, ``/metrics``), anything outside ``/api/``, and CORS preflights
(no credentials, no work) are never limited.

Counts live in ``RATELIMIT_STORAGE_URI``, with ``RATELIMIT_STORAGE_OPTIONS``
(see config.py): a shared store counts for every worker and replica,
``memory://`` for this process alone. When the storage cannot be reached,
requests are still served: the limiter logs a warning and counts in this
process's memory until the storage answers again; any other storage error
is logged and the request goes through. An outage of the storage must not
take the API down with it.

Flask-Limiter keeps the storage and its settings on the ``Limiter`` object,
so one object bound to two apps would count both in whichever storage was
bound last. ``init_app`` therefore builds one per app, unbound until then
like every extension in ``extensions.py``: tests build many apps in one
process, each with its own counts.
"""

from __future__ import annotations

import hashlib
import math
import time

from flask import Flask, current_app, request
from flask.wrappers import Response
from flask_limiter import ApplicationLimit, Limiter, RequestLimit
from limits.errors import ConfigurationError
from sqlalchemy.exc import SQLAlchemyError

from ..config import ConfigError

EXTENSION_KEY = "abuse_limits"
# Keys read LIMITER/api/<address or token digest>/<scope>/<rate>. Given
# here, Flask-Limiter takes no prefix from RATELIMIT_KEY_PREFIX (any prefix
# of the storage's own comes first).
LIMITER_KEY_PREFIX = "api"


def client_address() -> str:
    """The client's address, as ProxyFix left it (never a raw header)."""
    return request.remote_addr or "unknown"


def presented_token() -> str:
    """A digest of the bearer token sent, or ``""`` when there is none."""
    credentials = request.authorization
    if credentials is None or credentials.type != "bearer" or not credentials.token:
        return ""
    return hashlib.sha256(credentials.token.encode()).hexdigest()


def _without_token() -> bool:
    return not presented_token()


def _failed_authentication(response: Response) -> bool:
    return response.status_code == 401


def _authenticated() -> bool:
    """A valid token: not a failed authentication, so not counted or checked
    (no storage round trip on the requests that matter)."""
    from ..accounts import identify  # accounts builds on this package

    try:
        return identify() is not None
    except SQLAlchemyError:
        # The database cannot tell now: no failed authentication either.
        # The route asks again and answers the outage (a 503); raised here,
        # Flask-Limiter would take it for its own storage failing.
        return True


def _not_limited() -> bool:
    return request.method == "OPTIONS" or not request.path.startswith("/api/")


def _retry_after(breached: RequestLimit) -> Response:
    """The 429's ``Retry-After``; the problem handler copies it."""
    try:
        seconds = math.ceil(breached.window[0] - time.time())
    except Exception:  # the storage went away since the check: a full window
        current_app.logger.warning("rate limit storage unreachable for Retry-After")
        seconds = breached.limit.get_expiry()
    response = Response(status=429)
    response.headers["Retry-After"] = str(max(1, seconds))
    return response


def init_app(app: Flask) -> None:
    """Limit this app's ``/api/`` requests, unless ``RATELIMIT_ENABLED`` is off."""
    config = app.config
    if not config["RATELIMIT_ENABLED"]:
        return
    uri = config["RATELIMIT_STORAGE_URI"]
    try:
        limiter = Limiter(
            client_address,
            application_limits=[
                ApplicationLimit(
                    config["RATELIMIT_FAILED_AUTH"],
                    key_function=client_address,
                    scope="failed-auth",
                    deduct_when=_failed_authentication,
                    exempt_when=_authenticated,
                    error_message="Too many failed authentications from this "
                    "address; retry after the time in Retry-After.",
                ),
                ApplicationLimit(
                    config["RATELIMIT_PER_TOKEN"],
                    key_function=presented_token,
                    scope="token",
                    exempt_when=_without_token,
                    error_message="Too many requests with this token; retry "
                    "after the time in Retry-After.",
                ),
            ],
            storage_uri=uri,
            key_prefix=LIMITER_KEY_PREFIX,
            on_breach=_retry_after,
            swallow_errors=True,
            in_memory_fallback_enabled=True,
        )
        limiter.request_filter(_not_limited)
        limiter.init_app(app)
    except ConfigurationError as exc:
        scheme = uri.split(":", 1)[0]
        raise ConfigError(
            f"RATELIMIT_STORAGE_URI cannot be used ({scheme}:...): {exc}"
        ) from None
    app.extensions[EXTENSION_KEY] = limiter


def limiter_of(app: Flask) -> Limiter | None:
    """The app's limiter, or None when limits are off."""
    limiter: Limiter | None = app.extensions.get(EXTENSION_KEY)
    return limiter

"""Abuse limits on ``/api/``, counted with ``limits``.

nginx's ``limit_req`` stays the outer layer: it caps requests per address
before they reach a worker, but it cannot tell a failed authentication from
a good request, nor one token from another behind a shared address. So the
app adds two limits of its own, both answered with a 429 problem and
``Retry-After``:

- **Failed authentications per client address** (``RATELIMIT_FAILED_AUTH``):
  every 401 counts, and once an address is over the limit every request
  from it without a valid token is a 429 until its window ends. A caller
  with a valid token is no failed authentication: its requests skip this
  limit and its storage round trip. (Guessing gains nothing from that: a
  token holds 238 random bits.)
- **Requests per token** (``RATELIMIT_PER_TOKEN``): one leaked or runaway
  client cannot take every worker. The key is the token's id, never the
  token.

Both are counted where the caller becomes known, in authentication
(``accounts/auth.py``): at most one storage round trip per request (a busy
token's hits go in batches, see ``Counter``), nothing on routes without a
token (probes, metrics, the API document, signed download
links) or on CORS preflights. The client address is
``request.remote_addr``: ProxyFix has already taken it from the
``X-Forwarded-For`` entry the trusted proxies (``PROXY_HOPS``) set, and
ignores what a client wrote before it.

Counts live in ``RATELIMIT_STORAGE_URI``, with ``RATELIMIT_STORAGE_OPTIONS``
(see config.py): a shared store counts for every worker and replica,
``memory://`` for this process alone. When the storage fails, requests are
still served: a warning is logged and this process counts in its own memory
for ``STORAGE_RETRY_SECONDS`` before it asks the storage again. An outage of
the storage must not take the API down with it.

Why ``limits`` and not Flask-Limiter, which is built on it: Flask-Limiter
resolves every limit of every route, blueprint and default again on each
request, which cost more per request than the whole rest of the app's
layers; two fixed limits checked at one known place need none of it. The
storage URIs, options, strategies and rate strings are the same.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping
from functools import cached_property
from typing import Any

from flask import Flask, current_app, request
from limits import RateLimitItem, parse_many
from limits.errors import ConfigurationError
from limits.storage import MemoryStorage, Storage, storage_from_string
from werkzeug.exceptions import TooManyRequests

from ..config import ConfigError

EXTENSION_KEY = "abuse_limits"
# Keys read LIMITER/api/<scope>/<address or token id>/<rate>, after the
# storage's own prefix (RATELIMIT_KEY_PREFIX, if the storage takes one).
NAMESPACE = "api"
STORAGE_RETRY_SECONDS = 5.0
# A process adds hits to a shared storage in batches of up to 1/BATCH_DIVISOR
# of the headroom it last read (see Counter), for at most MAX_PENDING_KEYS
# keys at a time.
BATCH_DIVISOR = 32
MAX_PENDING_KEYS = 10_000
TOO_MANY_FAILURES = (
    "Too many failed authentications from this address; retry after the "
    "time in Retry-After."
)
TOO_MANY_REQUESTS = (
    "Too many requests with this token; retry after the time in Retry-After."
)

log = logging.getLogger(__name__)


class Counter:
    """Hits of each key, counted in a storage, or in this process's memory
    while that storage fails; safe to share across threads.

    A shared storage is told a batch of hits at a time: a process keeps up
    to ``1/BATCH_DIVISOR`` of a key's headroom (its limit less the count it
    last read) before it adds them, one storage round trip for the batch.
    Near the limit the batch shrinks to one hit, so refusals are exact. The
    price: while every process holds a batch, a key can pass its limit by
    those batches, at most ``processes x limit / BATCH_DIVISOR`` per window
    (with the defaults, 5 gunicorn workers and 1200 a minute: 185), and up
    to a batch per process is counted late or not at all. Limits below
    ``2 x BATCH_DIVISOR`` (the failed authentications') are counted hit by
    hit.
    """

    def __init__(self, uri: str, options: Mapping[str, Any]) -> None:
        storage = storage_from_string(uri, **options)
        if not isinstance(storage, Storage):
            raise ConfigurationError("an async storage cannot serve a WSGI app")
        self.storage = storage
        self._batches = not isinstance(storage, MemoryStorage)
        self._away_until = 0.0
        self._lock = threading.Lock()
        # key -> (hits not yet added, count last read from the storage)
        self._pending: dict[str, tuple[int, int]] = {}

    def hit(self, item: RateLimitItem, *keys: str) -> int | None:
        """Count one hit: None within the limit; over it, the seconds until
        the window ends."""
        key = item.key_for(*keys)
        batches = self._batches and item.amount >= 2 * BATCH_DIVISOR
        with self._lock:
            hits, seen = self._pending.pop(key, (0, 0))
            hits += 1
            if batches and hits < (item.amount - seen) // BATCH_DIVISOR:
                self._pending[key] = (hits, seen)
                return None
        storage = self._storage()
        try:
            return self._add(storage, item, key, hits, remember=batches)
        except Exception as exc:
            if storage is self._fallback:
                raise
            self._storage_failed(exc)
            return self._add(self._fallback, item, key, hits, remember=False)

    def _add(
        self,
        storage: Storage,
        item: RateLimitItem,
        key: str,
        hits: int,
        *,
        remember: bool,
    ) -> int | None:
        """Add ``hits`` to ``storage``: None within the limit; over it, the
        seconds until the window ends."""
        count = storage.incr(key, item.get_expiry(), amount=hits)
        if remember:
            self._read(key, count)
        if count <= item.amount:
            return None
        return max(1, math.ceil(storage.get_expiry(key) - time.time()))

    def _read(self, key: str, count: int) -> None:
        """Keep the count the storage answered: the next batch is sized from
        it (over the limit, no batch: every hit is counted at once)."""
        with self._lock:
            if len(self._pending) >= MAX_PENDING_KEYS:
                self._pending.clear()  # a flood of keys: count them afresh
            hits, _ = self._pending.get(key, (0, 0))
            self._pending[key] = (hits, count)

    @cached_property
    def _fallback(self) -> MemoryStorage:
        """Made when first needed: a MemoryStorage starts a timer thread."""
        return MemoryStorage()

    def _storage(self) -> Storage:
        if time.monotonic() < self._away_until:
            return self._fallback
        return self.storage

    def _storage_failed(self, exc: Exception) -> None:
        with self._lock:
            if time.monotonic() < self._away_until:
                return  # another thread already reported this failure
            self._away_until = time.monotonic() + STORAGE_RETRY_SECONDS
        log.warning(
            "Rate limit storage unreachable (%s); counting in this process for %g s",
            type(exc).__name__,
            STORAGE_RETRY_SECONDS,
        )


class AbuseLimits:
    """The two limits of ``/api/`` and the counter they share."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.per_token = parse_many(config["RATELIMIT_PER_TOKEN"])
        self.failed_auth = parse_many(config["RATELIMIT_FAILED_AUTH"])
        uri = config["RATELIMIT_STORAGE_URI"]
        try:
            self.counter = Counter(uri, config.get("RATELIMIT_STORAGE_OPTIONS", {}))
        except ConfigurationError as exc:
            scheme = uri.split(":", 1)[0]
            raise ConfigError(
                f"RATELIMIT_STORAGE_URI cannot be used ({scheme}:...): {exc}"
            ) from None

    @property
    def storage(self) -> Storage:
        return self.counter.storage

    def count_request(self, token_id: str) -> None:
        """Count a request with a valid token; a 429 past the token's limit."""
        self._count(self.per_token, "token", token_id, TOO_MANY_REQUESTS)

    def count_failed_authentication(self) -> None:
        """Count a 401 of this address; a 429 instead once it is over."""
        address = request.remote_addr or "unknown"
        self._count(self.failed_auth, "failed-auth", address, TOO_MANY_FAILURES)

    def _count(
        self, items: list[RateLimitItem], scope: str, key: str, detail: str
    ) -> None:
        for item in items:
            seconds = self.counter.hit(item, NAMESPACE, scope, key)
            if seconds is not None:
                raise TooManyRequests(detail, retry_after=seconds)


def init_app(app: Flask) -> None:
    """Limit this app's ``/api/`` requests, unless ``RATELIMIT_ENABLED`` is off."""
    if app.config["RATELIMIT_ENABLED"]:
        app.extensions[EXTENSION_KEY] = AbuseLimits(app.config)


def limits_of(app: Flask) -> AbuseLimits | None:
    """The app's limits, or None when they are off."""
    limits: AbuseLimits | None = app.extensions.get(EXTENSION_KEY)
    return limits


def count_request(token_id: str) -> None:
    """Count a request of this app with a valid token (see AbuseLimits)."""
    limits = limits_of(current_app)
    if limits is not None:
        limits.count_request(token_id)


def count_failed_authentication() -> None:
    """Count a failed authentication of this app (see AbuseLimits)."""
    limits = limits_of(current_app)
    if limits is not None:
        limits.count_failed_authentication()

"""Keep ``g`` light: after each request, estimate what it left on ``g``.

``g`` lives as long as the request, in every concurrent request of a
worker: a query result or a file's contents parked there multiplies by the
number of requests in flight and can take a worker down. ``g`` is for small
per-request values: ids, the current identity, handles. Large data belongs
in the database, a cache or a streamed response.

``G_SIZE_CHECK`` says what happens when one key of ``g`` is estimated above
``G_SIZE_LIMIT_BYTES``: ``warn`` logs a warning naming the key (the default
in development), ``fail`` raises :class:`HeavyGError` from the request's
teardown, which fails the test that made the request (the default in
testing), ``off`` measures nothing (the default in production).

The size is an estimate, cheap enough for every request: a walk over
containers and object attributes with :func:`sys.getsizeof`, cut off after
``NODE_BUDGET`` objects (the rest of a container is counted at the average
of the items seen). Handles into shared state (a session, an engine, the
app, a logger) count their own size only: what they point at is not the
request's.
"""

from __future__ import annotations

import enum
import logging
import sys
import types
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from itertools import chain

from flask import Flask, g, request

from ..config import ConfigError
from ..logs import request_id_var

log = logging.getLogger(__name__)

MODES = ("off", "warn", "fail")
NODE_BUDGET = 5_000
MAX_DEPTH = 32
# Classes from these packages are handles into state the request only
# borrows (connections, pools, the app, loggers): measured shallow.
SHARED_STATE_MODULES = (
    "flask",
    "werkzeug",
    "sqlalchemy",
    "flask_sqlalchemy",
{%- if cookiecutter.use_celery == "y" %}
    "celery",
    "kombu",
    "redis",
{%- endif %}
    "logging",
    "threading",
    "socket",
    "ssl",
    "_thread",
)
SHALLOW_TYPES = (
    type,
    enum.Enum,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.CodeType,
    types.FrameType,
    types.GeneratorType,
    types.CoroutineType,
)
LEAF_TYPES = (str, bytes, bytearray, memoryview, int, float, complex, bool)
MAPPINGS = (dict, types.MappingProxyType)
SEQUENCES = (list, tuple, set, frozenset, deque)


class HeavyGError(RuntimeError):
    """A request left more on ``g`` than ``G_SIZE_LIMIT_BYTES``."""


@dataclass
class Sizer:
    """A deep size estimate, each object counted once, at most ``budget``
    objects visited."""

    budget: int = NODE_BUDGET
    seen: set[int] = field(default_factory=set)

    @property
    def exhausted(self) -> bool:
        return self.budget <= 0

    def size(self, obj: object, depth: int = 0) -> int:
        if id(obj) in self.seen or self.exhausted:
            return 0
        self.seen.add(id(obj))
        self.budget -= 1
        own = sys.getsizeof(obj, 0)
        if depth >= MAX_DEPTH or isinstance(obj, LEAF_TYPES + SHALLOW_TYPES):
            return own
        if isinstance(obj, MAPPINGS):
            # Keys and values, not the (key, value) tuples: those are made
            # by the iteration and their ids reused.
            return own + self.items(
                chain.from_iterable(obj.items()), 2 * len(obj), depth
            )
        if isinstance(obj, SEQUENCES):
            return own + self.items(obj, len(obj), depth)
        if _is_shared_state(obj) or _sizes_itself(obj):
            return own
        return own + self.attributes(obj, depth)

    def items(self, items: Iterable[object], count: int, depth: int) -> int:
        """The items' sizes; those past the budget at the average so far."""
        total = measured = 0
        for item in items:
            if self.exhausted:
                break
            total += self.size(item, depth + 1)
            measured += 1
        if measured and measured < count:
            total += total // measured * (count - measured)
        return total

    def attributes(self, obj: object, depth: int) -> int:
        """The sizes of ``obj``'s ``__dict__`` and ``__slots__`` values. An
        object that will not show them (a proxy, a broken property) counts
        its own size only: the check must never break a request."""
        try:
            values = list(_attribute_values(obj))
        except Exception:  # any error: measured shallow
            return 0
        return sum(self.size(value, depth + 1) for value in values)


def _attribute_values(obj: object) -> Iterable[object]:
    namespace = getattr(obj, "__dict__", None)
    if isinstance(namespace, dict):
        yield namespace
    for cls in type(obj).__mro__:
        slots = cls.__dict__.get("__slots__", ())
        for name in (slots,) if isinstance(slots, str) else slots:
            if name not in ("__dict__", "__weakref__") and hasattr(obj, name):
                yield getattr(obj, name)


def _is_shared_state(obj: object) -> bool:
    module = type(obj).__module__ or ""
    return module.split(".", 1)[0] in SHARED_STATE_MODULES


def _sizes_itself(obj: object) -> bool:
    """A class with its own ``__sizeof__`` (a buffer, an array, a data
    frame) already reports what it holds."""
    return type(obj).__sizeof__ is not object.__sizeof__


def estimated_size(obj: object, budget: int = NODE_BUDGET) -> int:
    """Bytes ``obj`` holds, estimated: see the module's docstring."""
    return Sizer(budget=budget).size(obj)


def heavy_keys(limit: int) -> list[tuple[str, int]]:
    """Keys of ``g`` estimated above ``limit`` bytes, with their estimates."""
    heavy = []
    for key in list(g):
        size = estimated_size(g.get(key))
        if size > limit:
            heavy.append((key, size))
    return heavy


def describe(heavy: list[tuple[str, int]], limit: int) -> str:
    keys = ", ".join(f"g.{key} (about {size} bytes)" for key, size in heavy)
    return (
        f"{request.method} {request.path} left {keys} on g, over "
        f"G_SIZE_LIMIT_BYTES={limit}: keep large data in the database, a "
        "cache or a streamed response"
    )


def init_app(app: Flask) -> None:
    """Check ``g`` at the end of every request, unless ``G_SIZE_CHECK`` is
    ``off``. Call it before any other extension registers a teardown:
    Flask runs them in reverse, so this one runs last and, failing, skips
    no other teardown function."""
    mode = app.config["G_SIZE_CHECK"]
    limit = app.config["G_SIZE_LIMIT_BYTES"]
    if mode not in MODES:
        raise ConfigError(
            f"G_SIZE_CHECK must be one of {', '.join(MODES)}, got {mode!r}"
        )
    if not isinstance(limit, int) or limit <= 0:
        raise ConfigError(
            f"G_SIZE_LIMIT_BYTES must be a positive integer, got {limit!r}"
        )
    if mode == "off":
        return

    def check_g(_exc: BaseException | None) -> None:
        heavy = heavy_keys(limit)
        if not heavy:
            return
        if mode == "fail":
            raise HeavyGError(describe(heavy, limit))
        # The request's own teardown has unbound its id by now.
        token = request_id_var.set(g.get("request_id") or "-")
        try:
            log.warning("%s", describe(heavy, limit))
        finally:
            request_id_var.reset(token)

    app.teardown_request(check_g)

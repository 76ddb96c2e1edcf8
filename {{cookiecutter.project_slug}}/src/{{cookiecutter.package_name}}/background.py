"""Hand work to a thread without taking the request with it.

A thread has no request or app context: code that reads ``request`` or
``g`` there raises, or worse, reads another request's state through a
reference smuggled across. :func:`submit` makes the safe way the easy one:
arguments must be plain values captured in the view (ids, strings,
numbers), and the function runs inside a fresh app context of the same app,
so ``current_app`` and the database work and are cleaned up by teardown.
Work that must survive a restart belongs in a task queue instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from flask import Flask, current_app
from werkzeug.local import LocalProxy

from .extensions import db

P = ParamSpec("P")
R = TypeVar("R")

_EXTENSION = "background_executor"
_MAX_DEPTH = 4


class NotPlainValueError(TypeError):
    """An argument would carry request or session state into another thread."""


def ensure_plain(value: Any, where: str = "argument", _depth: int = 0) -> None:
    """Refuse context-local proxies and ORM instances, also inside containers."""
    if isinstance(value, LocalProxy):
        raise NotPlainValueError(
            f"{where} is a context-local proxy (request, g, session or "
            "current_app); read the values you need from it in the view and "
            "pass those instead"
        )
    if isinstance(value, db.Model):
        raise NotPlainValueError(
            f"{where} is a {type(value).__name__} model instance, bound to this "
            "request's database session; pass its id and load it again"
        )
    if _depth >= _MAX_DEPTH:
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            ensure_plain(item, f"{where}[{key!r}]", _depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            ensure_plain(item, f"{where}[{index}]", _depth + 1)


def ensure_plain_call(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    for index, arg in enumerate(args):
        ensure_plain(arg, f"argument {index}")
    for name, arg in kwargs.items():
        ensure_plain(arg, f"argument {name!r}")


def _executor(app: Flask) -> ThreadPoolExecutor:
    executor = app.extensions.get(_EXTENSION)
    if executor is None:
        executor = ThreadPoolExecutor(
            max_workers=app.config["BACKGROUND_THREADS"],
            thread_name_prefix=f"{app.name}-background",
        )
        app.extensions[_EXTENSION] = executor
    return executor


def submit(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> Future[R]:
    """Run ``fn(*args, **kwargs)`` on a thread, inside an app context."""
    ensure_plain_call(args, kwargs)
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]

    def run() -> R:
        with app.app_context():
            return fn(*args, **kwargs)

    return _executor(app).submit(run)

"""Per-request resources, closed when the app context ends.

Anything a request opens (a file, a client, a connection outside the ORM)
goes through :func:`hold`, which registers it on an exit stack in ``g``;
``teardown_appcontext`` closes the stack whether the view returned, raised
or was aborted. ``g`` keeps only small values and handles, never data.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, ExitStack
from typing import TypeVar

from flask import Flask, g

T = TypeVar("T")

_STACK = "resource_stack"


def hold(resource: AbstractContextManager[T]) -> T:
    """Enter ``resource`` now and exit it at the end of the app context."""
    stack = g.get(_STACK)
    if stack is None:
        stack = g.setdefault(_STACK, ExitStack())
    return stack.enter_context(resource)


def _close_resources(_exc: BaseException | None) -> None:
    stack = g.pop(_STACK, None)
    if stack is not None:
        stack.close()


def init_app(app: Flask) -> None:
    app.teardown_appcontext(_close_resources)

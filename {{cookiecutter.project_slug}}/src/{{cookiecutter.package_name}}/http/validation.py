"""Checks of client input that no model states, and pydantic's errors as
the 400 problem's ``errors``.

Before any model sees the input (``openapi.operation`` calls these), every
string in it (values and keys, at any depth) is checked for NUL characters:
PostgreSQL cannot store them, so they are refused here, on every database
alike, as a field error. Input nested deeper than ``MAX_DEPTH`` is refused
too.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from .problems import APIError

# Deeper than any valid body (the deepest, an export request, is two levels);
# the walk below is iterative, so this is a limit on work, not on the stack.
MAX_DEPTH = 32
NUL_MESSAGE = "must not contain NUL characters (\\u0000)"


def field_errors(error: ValidationError) -> dict[str, list[str]]:
    """Pydantic's error list as ``{"field": ["message", ...]}``."""
    errors: dict[str, list[str]] = {}
    for item in error.errors(include_url=False):
        field = ".".join(str(part) for part in item["loc"]) or "body"
        errors.setdefault(field, []).append(item["msg"])
    return errors


def nul_errors(data: Any, what: str) -> dict[str, list[str]]:
    """``{"field": [NUL_MESSAGE]}`` for each string in ``data`` with a NUL;
    raises a 400 if ``data`` is nested deeper than ``MAX_DEPTH``."""
    errors: dict[str, list[str]] = {}
    pending: list[tuple[tuple[str, ...], Any]] = [((), data)]
    while pending:
        path, value = pending.pop()
        if len(path) > MAX_DEPTH:
            raise APIError(400, f"The request {what} is nested too deeply.")
        if isinstance(value, str):
            if "\x00" in value:
                errors[".".join(path) or what] = [NUL_MESSAGE]
        elif isinstance(value, dict):
            for key, item in value.items():
                name = str(key)
                if "\x00" in name:
                    # The key itself cannot be echoed back usefully.
                    errors[".".join(path) or what] = [NUL_MESSAGE]
                    continue
                pending.append(((*path, name), item))
        elif isinstance(value, list):
            pending.extend(((*path, str(n)), item) for n, item in enumerate(value))
    return errors

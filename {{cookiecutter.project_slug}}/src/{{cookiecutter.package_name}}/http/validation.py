"""Validation of client input with pydantic, failing as a 400 problem."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .problems import APIError

M = TypeVar("M", bound=BaseModel)


def field_errors(error: ValidationError) -> dict[str, list[str]]:
    """Pydantic's error list as ``{"field": ["message", ...]}``."""
    errors: dict[str, list[str]] = {}
    for item in error.errors(include_url=False):
        field = ".".join(str(part) for part in item["loc"]) or "body"
        errors.setdefault(field, []).append(item["msg"])
    return errors


def parse(model: type[M], data: Any, what: str = "body") -> M:
    """Validate ``data`` or raise a 400 that lists every bad field."""
    if what == "body" and not isinstance(data, dict):
        raise APIError(400, "The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise APIError(
            400, f"The request {what} is invalid.", errors=field_errors(error)
        ) from None

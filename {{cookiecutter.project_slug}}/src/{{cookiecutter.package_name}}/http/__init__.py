"""The HTTP layer: JSON, errors, request ids, security headers, resources,
abuse limits and CORS."""

from __future__ import annotations

from flask import Flask

from . import cors, limits, problems, request_id, resources, security
from .json import JSONProvider


def init_app(app: Flask) -> None:
    # Request id first: every later hook and log line can use it.
    request_id.init_app(app)
    security.init_app(app)
    problems.init_app(app)
    resources.init_app(app)
    limits.init_app(app)
    cors.init_app(app)


__all__ = ["JSONProvider", "init_app"]

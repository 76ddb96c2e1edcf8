"""Liveness and readiness probes."""

from .routes import bp

__all__ = ["bp"]

"""Prometheus metrics: HTTP requests (``web``), Celery tasks (``tasks``) and
their exposition, in one process or many (``exposition``)."""

from .web import init_app

__all__ = ["init_app"]

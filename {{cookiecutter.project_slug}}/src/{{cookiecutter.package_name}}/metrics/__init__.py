"""Prometheus metrics: HTTP requests (``web``), and their exposition, in one
process or many (``exposition``); features may count their own work in a
module of this package."""

from .web import init_app

__all__ = ["init_app"]

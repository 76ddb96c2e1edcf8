"""Prometheus metrics: HTTP requests (``web``),{% if cookiecutter.use_celery == "y" %} Celery tasks (``tasks``),{% endif %}
and their exposition, in one process or many (``exposition``)."""

from .web import init_app

__all__ = ["init_app"]

"""Background exports: files written by a worker, downloaded through nginx."""

from . import tasks
from .routes import bp

__all__ = ["bp", "tasks"]

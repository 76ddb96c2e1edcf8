"""Background jobs: a record per unit of queued work, and its tasks."""

from . import tasks
from .routes import bp

__all__ = ["bp", "tasks"]

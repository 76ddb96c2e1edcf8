"""Events: the sample domain the API lists, creates and exports."""

from .routes import bp

__all__ = ["bp"]

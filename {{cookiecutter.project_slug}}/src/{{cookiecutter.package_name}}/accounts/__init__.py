"""Accounts and their API tokens: who is calling, and what they may do."""

from .auth import (
    Identity,
    Scope,
    auth,
    current_identity,
    identify,
    init_app,
    require,
)

__all__ = [
    "Identity",
    "Scope",
    "auth",
    "current_identity",
    "identify",
    "init_app",
    "require",
]

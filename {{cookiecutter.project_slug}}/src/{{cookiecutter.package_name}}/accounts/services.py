"""Accounts and tokens on plain values: create, issue, list, revoke, verify."""

from __future__ import annotations

import enum
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, or_, select, update

from ..extensions import db
from ..sqltypes import utcnow
from . import tokens
from .models import Account, ApiToken


class Scope(enum.StrEnum):
    """What a token may do. Each route requires one."""

    READ = "read"
    WRITE = "write"


@dataclass(frozen=True)
class Identity:
    """Who a request acts for: plain values, safe to hand to services,
    threads and tasks (never the ORM row)."""

    account_id: int
    token_id: uuid.UUID
    scopes: frozenset[str]
    expires_at: datetime | None = None


@dataclass(frozen=True)
class IssuedToken:
    """A token as issued: ``secret`` exists here and nowhere else."""

    id: uuid.UUID
    secret: str


# The lookup of every authenticated request, built once: building the
# statement per call costs more CPU than running it (a cached compile).
TOKEN_LOOKUP = select(
    ApiToken.id,
    ApiToken.account_id,
    ApiToken.scopes,
    ApiToken.expires_at,
    ApiToken.last_used_at,
).where(
    ApiToken.token_hash == bindparam("digest"),
    ApiToken.revoked_at.is_(None),
    or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > bindparam("now")),
)


class AccountError(ValueError):
    """A CLI-level mistake: an unknown account, a duplicate name."""


def create_account(name: str) -> Account:
    if find_account(name) is not None:
        raise AccountError(f"an account named {name!r} exists already")
    account = Account(name=name)
    db.session.add(account)
    db.session.commit()
    return account


def find_account(name: str) -> Account | None:
    return db.session.scalar(select(Account).where(Account.name == name))


def get_or_create_account(name: str) -> Account:
    return find_account(name) or create_account(name)


def issue_token(
    account: Account,
    scopes: Iterable[str],
    *,
    name: str = "api",
    expires_in: timedelta | None = None,
) -> IssuedToken:
    """Make a token for ``account``; only its digest is stored."""
    secret = tokens.generate()
    now = utcnow()
    token = ApiToken(
        account_id=account.id,
        name=name,
        token_hash=tokens.digest(secret),
        scopes=" ".join(sorted(set(scopes))),
        created_at=now,
        expires_at=now + expires_in if expires_in else None,
    )
    db.session.add(token)
    db.session.commit()
    return IssuedToken(id=token.id, secret=secret)


def list_tokens(account: Account) -> Sequence[ApiToken]:
    return db.session.scalars(
        select(ApiToken)
        .where(ApiToken.account_id == account.id)
        .order_by(ApiToken.created_at)
    ).all()


def revoke_token(token_id: uuid.UUID) -> bool:
    """Revoke a token; False if there is none with that id."""
    token = db.session.get(ApiToken, token_id)
    if token is None:
        return False
    token.revoked_at = token.revoked_at or utcnow()
    db.session.commit()
    return True


def authenticate(
    secret: str, *, now: datetime, last_used_resolution: timedelta
) -> Identity | None:
    """The identity a bearer token stands for, or None when it is malformed,
    unknown, expired or revoked (callers cannot tell which: all are 401).

    ``last_used_at`` is written at most once per ``last_used_resolution``
    per token, so a busy token does not turn every read into a write.
    """
    if not tokens.well_formed(secret):
        return None
    # Core execution on the session's connection: same transaction, no ORM
    # result processing for a four-column row.
    row = (
        db.session.connection()
        .execute(TOKEN_LOOKUP, {"digest": tokens.digest(secret), "now": now})
        .one_or_none()
    )
    if row is None:
        return None
    token_id, account_id, scopes, expires_at, last_used_at = row
    if last_used_at is None or now - last_used_at >= last_used_resolution:
        db.session.execute(
            update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=now)
        )
        db.session.commit()
    return Identity(
        account_id=account_id,
        token_id=token_id,
        scopes=frozenset(scopes.split()),
        expires_at=expires_at,
    )


class VerifiedTokens:
    """Identities of tokens this process verified in the last ``seconds``.

    A hit skips the database: the lookup is a large share of a small
    request's cost. The price is that revoking a token takes up to
    ``seconds`` to reach every process (expiry is still checked on every
    hit). Only valid tokens are kept, so guesses cannot fill it; it is
    emptied when it reaches ``max_entries``. ``seconds=0`` keeps nothing.
    """

    def __init__(self, seconds: float, max_entries: int = 10_000) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, Identity]] = {}

    def get(self, secret: str, now: datetime) -> Identity | None:
        entry = self._entries.get(tokens.digest(secret))
        if entry is None:
            return None
        kept_until, identity = entry
        expired = identity.expires_at is not None and identity.expires_at <= now
        if expired or time.monotonic() >= kept_until:
            self._entries.pop(tokens.digest(secret), None)
            return None
        return identity

    def put(self, secret: str, identity: Identity) -> None:
        if self.seconds <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        # Keyed by digest: no token lingers in memory past its request.
        self._entries[tokens.digest(secret)] = (
            time.monotonic() + self.seconds,
            identity,
        )

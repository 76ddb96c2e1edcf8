"""Throwaway databases on a PostgreSQL server (``postgresql://user@host:port``),
for the tests and benchmarks that run a project on real PostgreSQL."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import psycopg
from psycopg import sql


def create_database(server: str, name: str) -> str:
    """Create the empty database ``name``; returns its URL."""
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return f"{server}/{name}"


def drop_database(server: str, name: str) -> None:
    """Drop ``name`` if it exists, closing what is still connected to it."""
    with psycopg.connect(f"{server}/postgres", autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)
            )
        )


@contextlib.contextmanager
def throwaway_database(server: str, prefix: str) -> Iterator[str]:
    """A new database named ``<prefix>_<random>``, dropped afterwards;
    yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    url = create_database(server, name)
    try:
        yield url
    finally:
        drop_database(server, name)

"""A throwaway PostgreSQL database for one test session.

Only the server of DATABASE_URL is used. The tests create a database of
their own there, named after DATABASE_URL's with a random suffix, and drop
it at the end, so runs never collide.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from {{ cookiecutter.package_name }}.config import normalize_database_url


@contextmanager
def temporary_database(server_url: str) -> Iterator[str]:
    """Create a fresh database on the server of ``server_url``; yield its URL."""
    url = make_url(normalize_database_url(server_url))
    name = f"{url.database or 'test'}_{uuid.uuid4().hex[:12]}"
    # Connect to the maintenance database: the named one need not exist.
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(name)
                )
            )

"""CLI commands, registered on the app: ``flask seed`` and ``flask
check-deploy`` (``deploy_check.py``; accounts and tokens have theirs in
``accounts/cli.py``)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from itertools import islice
from typing import Any

import click
from flask import Flask
from flask.cli import with_appcontext
from sqlalchemy import insert, select, text

from .accounts.services import get_or_create_account
from .deploy_check import check_deploy_command
from .events.models import Event
from .extensions import db
from .sqltypes import utcnow

KINDS = ("signup", "login", "purchase", "refund", "logout", "page_view")
SAMPLE_SPAN = timedelta(days=30)


def sample_events(
    count: int, rng: random.Random, owner_id: int
) -> Iterator[dict[str, Any]]:
    """Values of the sample columns of ``count`` events over the last
    SAMPLE_SPAN, oldest first; other columns get their defaults.

    ``created_at`` rises event by event, as it does for rows the service
    stores one after another: inserted in this order, the table's physical
    order follows it as in production, and an export reads the table in
    that order. Each event occurred up to an hour before it was stored."""
    step = SAMPLE_SPAN / max(count, 1)
    start = utcnow() - SAMPLE_SPAN
    for index in range(count):
        created_at = start + index * step
        yield {
            "id": uuid.UUID(int=rng.getrandbits(128), version=4),
            "owner_id": owner_id,
            "kind": rng.choice(KINDS),
            "amount": Decimal(rng.randrange(0, 100_000_00)) / 100,
            "payload": f"sample event {rng.randrange(1_000_000)}",
            "occurred_at": created_at - timedelta(seconds=rng.randrange(3600)),
            "created_at": created_at,
        }


def insert_rows(rows: list[dict[str, Any]]) -> None:
    """Bulk insert: COPY on PostgreSQL, multi-row INSERT elsewhere."""
    connection = db.session.connection()
    if connection.dialect.name != "postgresql":
        db.session.execute(insert(Event), rows)
        return
    # COPY fills in the table's server defaults, not the model's: the
    # model's fixed defaults of columns the rows leave out are added here.
    defaults = {
        column.name: column.default.arg
        for column in Event.__table__.columns
        if column.name not in rows[0]
        and column.default is not None
        and column.default.is_scalar
    }
    columns = [*rows[0], *defaults]
    statement = f"COPY {Event.__tablename__} ({', '.join(columns)}) FROM STDIN"
    raw: Any = connection.connection.driver_connection  # psycopg's, untyped here
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for row in rows:
            copy.write_row([*row.values(), *defaults.values()])


def seed_events(
    owner_id: int,
    rows: int,
    batch_size: int = 5000,
    seed: int | None = None,
    progress: Any = None,
) -> int:
    """Insert ``rows`` sample events of ``owner_id`` in batches, in one
    transaction, then refresh the table's statistics, as after any bulk
    load: until autovacuum gets round to it, the planner would guess."""
    rng = random.Random(seed)  # noqa: S311 - sample data, not secrets
    events = sample_events(rows, rng, owner_id)
    inserted = 0
    while batch := list(islice(events, batch_size)):
        insert_rows(batch)
        inserted += len(batch)
        if progress is not None:
            progress.update(len(batch))
    db.session.commit()
    db.session.execute(text(f"ANALYZE {Event.__tablename__}"))
    db.session.commit()
    return inserted


@click.command("seed")
@click.option("--rows", default=1000, show_default=True, type=click.IntRange(min=0))
@click.option("--batch-size", default=5000, show_default=True, type=click.IntRange(1))
@click.option("--seed", type=int, help="Random seed, for repeatable data.")
@click.option(
    "--account",
    default="demo",
    show_default=True,
    help="Owner of the events; created if missing.",
)
@click.option("--if-empty", is_flag=True, help="Do nothing if the account has events.")
@with_appcontext
def seed_command(
    rows: int, batch_size: int, seed: int | None, account: str, if_empty: bool
) -> None:
    """Insert sample events of one account (bulk, in batches) with a progress bar."""
    owner_id = get_or_create_account(account).id
    existing = select(Event.id).where(Event.owner_id == owner_id).limit(1)
    if if_empty and db.session.scalar(existing) is not None:
        click.echo(f"Account {account} has events already; nothing seeded.")
        return
    with click.progressbar(length=rows, label=f"Seeding events of {account}") as bar:
        inserted = seed_events(owner_id, rows, batch_size, seed, progress=bar)
    click.echo(f"Inserted {inserted} events for account {account}.")


def init_app(app: Flask) -> None:
    app.cli.add_command(seed_command)
    app.cli.add_command(check_deploy_command)

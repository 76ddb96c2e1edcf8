"""``flask seed`` inserts sample events of one account in bulk."""

from __future__ import annotations

import random
from datetime import timedelta

from flask import Flask
from sqlalchemy import func, select, text

from {{ cookiecutter.package_name }}.cli import SAMPLE_SPAN, sample_events
from {{ cookiecutter.package_name }}.events.models import Event
from {{ cookiecutter.package_name }}.extensions import db
from {{ cookiecutter.package_name }}.sqltypes import utcnow

from support import account_id


def count_events(app: Flask, owner_id: int | None = None) -> int:
    query = select(func.count()).select_from(Event)
    if owner_id is not None:
        query = query.where(Event.owner_id == owner_id)
    with app.app_context():
        return db.session.scalar(query)


def test_seed_inserts_the_requested_rows(app: Flask) -> None:
    result = app.test_cli_runner().invoke(
        args=["seed", "--rows", "1234", "--batch-size", "500", "--seed", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "Inserted 1234 events for account demo." in result.output
    # The default account, created for the purpose, owns them all.
    assert count_events(app) == count_events(app, account_id(app, "demo")) == 1234


def test_seeded_rows_are_served_by_the_api(app: Flask) -> None:
    runner = app.test_cli_runner()
    runner.invoke(args=["seed", "--rows", "30", "--seed", "2", "--account", "tester"])
    runner.invoke(args=["seed", "--rows", "5", "--seed", "3", "--account", "other"])
    body = app.test_client().get("/api/events?limit=30").get_json()
    assert len(body["items"]) == 30
    assert {item["owner_id"] for item in body["items"]} == {account_id(app)}
    assert body["next_cursor"] is None


def test_seed_refuses_a_negative_count(app: Flask) -> None:
    result = app.test_cli_runner().invoke(args=["seed", "--rows", "-5"])
    assert result.exit_code != 0
    assert "--rows" in result.output
    assert count_events(app) == 0


def test_seed_if_empty_seeds_once(app: Flask) -> None:
    runner = app.test_cli_runner()
    runner.invoke(args=["seed", "--rows", "10", "--if-empty"])
    again = runner.invoke(args=["seed", "--rows", "10", "--if-empty"])
    assert again.exit_code == 0
    assert "nothing seeded" in again.output
    assert count_events(app) == 10


def test_sample_events_are_created_in_the_order_they_come() -> None:
    """As rows the service stores one after another: ``created_at`` rises
    event by event over the last SAMPLE_SPAN (inserted in this order, the
    table's physical order follows it, as an export reads it), each event
    occurring up to an hour before."""
    started = utcnow()
    events = list(sample_events(600, random.Random(1), owner_id=1))
    created = [event["created_at"] for event in events]
    assert len(created) == len(set(created)) == 600
    assert created == sorted(created)
    assert started - SAMPLE_SPAN <= created[0]
    assert created[-1] <= utcnow()
    assert created[-1] - created[0] > SAMPLE_SPAN * 0.99
    lags = {event["created_at"] - event["occurred_at"] for event in events}
    assert all(timedelta(0) <= lag < timedelta(hours=1) for lag in lags)
    assert len(lags) > 1


# Where each database keeps the statistics ANALYZE gathers for a table.
TABLE_STATISTICS = {
    "postgresql": "SELECT count(*) FROM pg_stats"
    " WHERE schemaname = current_schema() AND tablename = :table",
    "sqlite": "SELECT count(*) FROM sqlite_stat1 WHERE tbl = :table",
}


def test_seed_leaves_fresh_statistics_for_the_planner(app: Flask) -> None:
    app.test_cli_runner().invoke(args=["seed", "--rows", "50"])
    with app.app_context():
        query = TABLE_STATISTICS[db.engine.dialect.name]
        gathered = db.session.scalar(text(query), {"table": Event.__tablename__})
    assert gathered > 0

"""``flask seed`` inserts sample events of one account in bulk."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import func, select

from {{ cookiecutter.package_name }}.events.models import Event
from {{ cookiecutter.package_name }}.extensions import db

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

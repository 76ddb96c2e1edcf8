"""``flask seed`` inserts sample events in bulk."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import func, select

from {{ cookiecutter.package_name }}.events.models import Event
from {{ cookiecutter.package_name }}.extensions import db


def count_events(app: Flask) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Event))


def test_seed_inserts_the_requested_rows(app: Flask) -> None:
    result = app.test_cli_runner().invoke(
        args=["seed", "--rows", "1234", "--batch-size", "500", "--seed", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "Inserted 1234 events." in result.output
    assert count_events(app) == 1234


def test_seeded_rows_are_served_by_the_api(app: Flask) -> None:
    app.test_cli_runner().invoke(args=["seed", "--rows", "30", "--seed", "2"])
    body = app.test_client().get("/api/events?limit=30").get_json()
    assert len(body["items"]) == 30
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

"""Migrations build the schema the models describe, and undo it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask
from flask_migrate import downgrade, upgrade
from sqlalchemy import Column, Integer, MetaData, Table, inspect{% if cookiecutter.use_celery == "y" %}, text{% endif %}

from {{ cookiecutter.package_name }}.extensions import db


@pytest.fixture
def empty_app(make_app: Callable[..., Flask], tmp_path: Path, postgres_url) -> Flask:
    """An app on a database with no tables yet."""
    if postgres_url:
        from pg_database import temporary_database

        with temporary_database(postgres_url) as url:
            yield make_app(schema=False, SQLALCHEMY_DATABASE_URI=url)
            with make_app(schema=False, SQLALCHEMY_DATABASE_URI=url).app_context():
                db.engine.dispose()
        return
    yield make_app(schema=False, SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path}/m.db")


def schema_diff(metadata: MetaData) -> list:
    with db.engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection), metadata)


def test_upgrade_matches_the_models_and_downgrade_undoes_it(empty_app: Flask) -> None:
    with empty_app.app_context():
        upgrade()
        assert schema_diff(db.metadata) == []
        assert "events" in inspect(db.engine).get_table_names()
        downgrade(revision="base")
        assert "events" not in inspect(db.engine).get_table_names()
        db.engine.dispose()


def test_the_check_notices_a_model_without_a_migration(empty_app: Flask) -> None:
    drifted = MetaData()
    for table in db.metadata.tables.values():
        table.to_metadata(drifted)
    Table("not_migrated", drifted, Column("id", Integer, primary_key=True))
    with empty_app.app_context():
        upgrade()
        diff = schema_diff(drifted)
        db.engine.dispose()
    assert [entry[0] for entry in diff] == ["add_table"]
{%- if cookiecutter.use_celery == "y" %}


def test_job_errors_become_codes_without_their_text(empty_app: Flask) -> None:
    """0005 drops the exception text failed jobs showed their owners."""
    with empty_app.app_context():
        upgrade(revision="0004")
        with db.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO accounts (id, name, created_at) "
                    "VALUES (1, 'a', CURRENT_TIMESTAMP)"
                )
            )
            for number, (status, error) in enumerate(
                [
                    ("failed", "IntegrityError: [SQL: INSERT INTO events ...]"),
                    ("failed", "could not enqueue: broker unreachable"),
                    ("pending", None),
                ]
            ):
                connection.execute(
                    text(
                        "INSERT INTO jobs (id, owner_id, kind, params, status, "
                        "attempts, error, created_at) VALUES (:id, 1, 'k', '{}', "
                        ":status, 0, :error, CURRENT_TIMESTAMP)"
                    ),
                    {"id": f"{number:032x}", "status": status, "error": error},
                )
        upgrade()
        with db.engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT error_code, requeues, updated_at IS NOT NULL "
                    "FROM jobs ORDER BY id"
                )
            ).all()
        db.engine.dispose()
    assert [tuple(row) for row in rows] == [
        ("internal_error", 0, True),
        ("broker_unavailable", 0, True),
        (None, 0, True),
    ]
{%- endif %}

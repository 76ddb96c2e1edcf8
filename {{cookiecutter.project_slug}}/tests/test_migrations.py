"""Migrations build the schema the models describe, and undo it."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask import Flask
from flask_migrate import downgrade, upgrade
from sqlalchemy import Column, Integer, MetaData, Table, inspect

from {{ cookiecutter.package_name }}.extensions import db


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

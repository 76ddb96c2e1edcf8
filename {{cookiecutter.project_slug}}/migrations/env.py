"""Alembic environment, driven by the Flask app's engine and metadata.

Logging is left to the app (no ``fileConfig``, which would silence every
logger created before it). SQLite gets batch mode, since it cannot ALTER
most things in place; app-specific column types render as their portable
implementation, so scripts never import the application.
"""

import logging
from typing import Any

from alembic import context
from flask import current_app

from {{ cookiecutter.package_name }}.database import unhurried

log = logging.getLogger("alembic.env")

migrate_ext = current_app.extensions["migrate"]
target_metadata = migrate_ext.db.metadata


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Write TypeDecorators as the type they store, e.g. DateTime(timezone=True)."""
    from sqlalchemy.types import TypeDecorator

    if type_ == "type" and isinstance(obj, TypeDecorator):
        autogen_context.imports.add("import sqlalchemy as sa")
        return f"sa.{obj.impl!r}"
    return False


def skip_empty_revisions(ctx: Any, revision: Any, directives: list[Any]) -> None:
    if getattr(context.config.cmd_opts, "autogenerate", False):
        script = directives[0]
        if script.upgrade_ops.is_empty():
            directives[:] = []
            log.info("No changes in schema detected.")


def run_migrations_online() -> None:
    engine = migrate_ext.db.engine
    options = dict(migrate_ext.configure_args)
    options.setdefault("process_revision_directives", skip_empty_revisions)
    options.setdefault("render_item", render_item)
    options.setdefault("render_as_batch", engine.dialect.name == "sqlite")
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=target_metadata, **options
        )
        # A migration may rewrite a large table: no statement or answer timeout.
        with context.begin_transaction(), unhurried(connection):
            context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(
        url=migrate_ext.db.engine.url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()

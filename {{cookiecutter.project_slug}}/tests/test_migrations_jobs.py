"""The jobs migrations keep what a client may see of a failed job: codes,
never an exception's text."""

from __future__ import annotations

from flask import Flask
from flask_migrate import upgrade
from sqlalchemy import text

from {{ cookiecutter.package_name }}.extensions import db


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

"""Helpers shared by the tests."""

from __future__ import annotations

from typing import Any

from flask import Flask
from werkzeug.test import TestResponse

from {{ cookiecutter.package_name }}.extensions import db


def checked_out(app: Flask) -> int:
    """Connections the app's pool has lent out right now."""
    with app.app_context():
        return db.engine.pool.checkedout()


def problem_of(response: TestResponse) -> dict[str, Any]:
    """The problem+json body of an error response, checked for its shape."""
    assert response.mimetype == "application/problem+json", response.data
    body = response.get_json(force=True)
    assert body["status"] == response.status_code
    assert "title" in body
    return body

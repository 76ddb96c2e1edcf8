"""A column added to ``Event`` reaches the API and every export with the
edits the generated README lists: the model, the schema and a migration
that Alembic writes. Proven on a fresh default bake (PostgreSQL, so CSV
takes the COPY path; Celery, so the background export writes it too), with
a type the model does not use yet: a boolean."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from prerequisites import require_python
from template_tools.environment import clean_env
from template_tools.process import run
from template_tools.template import bake_into, defaults

pytestmark = pytest.mark.slow

PACKAGE = "src/flask_service/events"
COLUMN = (
    "    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)\n"
)
# The three edits a user makes, as (file, old text, new text).
EDITS = [
    (
        f"{PACKAGE}/models.py",
        "from sqlalchemy import ForeignKey,",
        "from sqlalchemy import Boolean, ForeignKey,",
    ),
    (
        f"{PACKAGE}/models.py",
        COLUMN,
        COLUMN + "    flagged: Mapped[bool] = mapped_column(Boolean, default=False)\n",
    ),
    # Settable by clients (EventCreate) and shown to them (EventOut).
    (
        f"{PACKAGE}/schemas.py",
        "    occurred_at: Instant | None = None\n",
        "    occurred_at: Instant | None = None\n    flagged: bool = False\n",
    ),
    (
        f"{PACKAGE}/schemas.py",
        "    created_at: Timestamp\n",
        "    created_at: Timestamp\n    flagged: bool\n",
    ),
]
# What the new column looks like in every export, checked by the bake's own
# fixtures and worker (tests/test_tasks.py) in one more test module.
CHECKS = '''"""The new ``flagged`` column in the API and every export."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

from flask import Flask

from test_tasks import run_export, worker_app  # noqa: F401 - a fixture

EVENTS = [
    {"kind": "sale", "amount": "1.00", "flagged": True},
    {"kind": "sale", "amount": "2.00"},
]


def add_events(app: Flask) -> None:
    client = app.test_client()
    for body in EVENTS:
        response = client.post("/api/events", json=body)
        assert response.status_code == 201, response.get_json()
        assert response.get_json()["flagged"] is body.get("flagged", False)


def check_csv(body: bytes) -> None:
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert [row["flagged"] for row in rows] == ["True", "False"]


def check_ndjson(body: bytes) -> None:
    records = [json.loads(line) for line in body.decode().splitlines()]
    assert [record["flagged"] for record in records] == [True, False]


def test_the_api_and_the_streamed_exports_carry_it(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app()
    add_events(app)
    client = app.test_client()
    items = client.get("/api/events").get_json()["items"]
    assert [item["flagged"] for item in items] == [False, True]
    check_csv(client.get("/api/events/export.csv").data)
    check_ndjson(client.get("/api/events/export.ndjson").data)


def test_the_background_exports_carry_it(worker_app: Flask) -> None:  # noqa: F811
    add_events(worker_app)
    client = worker_app.test_client()
    for fmt, check in (("csv", check_csv), ("ndjson", check_ndjson)):
        done = run_export(worker_app, {"format": fmt})
        assert done["status"] == "succeeded", done
        written = Path(worker_app.config["EXPORT_DIR"], done["result"]["filename"])
        check(written.read_bytes())
        assert written.read_bytes() == client.get(f"/api/events/export.{fmt}").data
'''
CHECKS_FILE = "tests/test_flagged_column.py"
# Not the user's files: the environment, caches, the local database.
IGNORED = {".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", "instance"}


def snapshot(project: Path) -> dict[str, str]:
    """sha256 of every file of the project a user would edit or commit."""
    return {
        str(path.relative_to(project)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in project.rglob("*")
        if path.is_file()
        and not IGNORED.intersection(path.relative_to(project).parts)
        and "__pycache__" not in path.parts
    }


def test_a_new_column_reaches_every_export_with_three_edits(
    tmp_path: Path,
    cookiecutter_config: Path,
    uv_cache_dir: Path,
    postgres_url: str,
) -> None:
    settings = defaults()
    assert (settings["database"], settings["use_celery"]) == ("postgresql", "y")
    python = require_python(settings["python_version"])
    project = bake_into(tmp_path, cookiecutter_config)
    assert project.name == "flask-service", "PACKAGE names flask_service"
    make_env = clean_env(UV_CACHE_DIR=str(uv_cache_dir), UV_LINK_MODE="copy")
    installed = run(["make", "install", f"PYTHON={python}"], project, make_env)
    assert installed.returncode == 0, installed.stdout
    before = snapshot(project)

    for name, old, new in EDITS:
        path = project / name
        text = path.read_text()
        assert text.count(old) == 1, f"{name}: {old!r} is not there once"
        path.write_text(text.replace(old, new))
    env = clean_env(
        APP_ENV="development", SECRET_KEY="x" * 64, DATABASE_URL=postgres_url
    )
    flask = [str(project / ".venv/bin/flask"), "--app", "flask_service.wsgi"]
    for command in (["db", "upgrade"], ["db", "migrate", "-m", "events are flagged"]):
        result = run([*flask, *command], project, env)
        assert result.returncode == 0, result.stdout

    changed = {
        name for name, digest in snapshot(project).items() if before.get(name) != digest
    }
    (migration,) = [name for name in changed if name.startswith("migrations/")]
    written = (project / migration).read_text().replace("'", '"')
    assert 'add_column(sa.Column("flagged", sa.Boolean()' in written
    assert changed == {f"{PACKAGE}/models.py", f"{PACKAGE}/schemas.py", migration}

    # The migration applies, and the seed command fills the column in.
    for command in (["db", "upgrade"], ["seed", "--rows", "100"]):
        result = run([*flask, *command], project, env)
        assert result.returncode == 0, result.stdout
    # The new migration is formatted as the project: lint and types pass.
    for target in ("lint", "typecheck"):
        result = run(["make", target, f"PYTHON={python}"], project, make_env)
        assert result.returncode == 0, result.stdout

    (project / CHECKS_FILE).write_text(CHECKS)
    pytest = [str(project / ".venv/bin/pytest"), "-p", "no:cacheprovider"]
    checks = run([*pytest, CHECKS_FILE], project, clean_env(DATABASE_URL=postgres_url))
    assert "2 passed" in checks.stdout, checks.stdout
    # And the project's whole suite, the new column present.
    suite = run(
        ["make", "test", f"PYTHON={python}", "PYTEST_ARGS=-p no:cacheprovider"],
        project,
        clean_env(DATABASE_URL=postgres_url),
        timeout=1800,
    )
    assert suite.returncode == 0, suite.stdout
    assert " passed" in suite.stdout, suite.stdout
    assert "skipped" not in suite.stdout, suite.stdout

"""`make typecheck` (mypy, configured in the generated pyproject) is clean on
the richest bake and the leanest one.

One virtualenv serves both: the PostgreSQL + Celery bake installs every
dependency, and the SQLite bake without Celery reuses it (its `make` target
reinstalls just the project, editable, over the first one).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from prerequisites import require_python
from template_tools.environment import clean_env
from template_tools.process import run
from template_tools.template import bake_into, defaults

pytestmark = pytest.mark.slow

COMBINATIONS = [
    {"database": "postgresql", "use_celery": "y"},
    {"database": "sqlite", "use_celery": "n"},
]


@pytest.fixture(scope="module")
def shared_venv(
    tmp_path_factory: pytest.TempPathFactory, uv_cache_dir: Path
) -> tuple[Path, dict[str, str]]:
    """(virtualenv path, make environment), the venv holding every dependency."""
    python = require_python(defaults()["python_version"])
    venv = tmp_path_factory.mktemp("typecheck") / "venv"
    env = clean_env(UV_CACHE_DIR=str(uv_cache_dir), UV_LINK_MODE="copy")
    env["PYTHON"] = python
    env["VENV"] = str(venv)
    return venv, env


@pytest.mark.parametrize(
    "combination",
    COMBINATIONS,
    ids=[f"{c['database']}-celery_{c['use_celery']}" for c in COMBINATIONS],
)
def test_mypy_is_clean(
    combination: dict[str, str],
    shared_venv: tuple[Path, dict[str, str]],
    tmp_path: Path,
    cookiecutter_config: Path,
) -> None:
    venv, env = shared_venv
    project = bake_into(tmp_path, cookiecutter_config, **combination)
    result = run(["make", "typecheck"], project, env)
    assert result.returncode == 0, result.stdout
    assert "Success: no issues found" in result.stdout, result.stdout
    assert (venv / "bin" / "mypy").is_file()

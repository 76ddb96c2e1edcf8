"""Representative bakes install themselves and pass their own test suite.

Together they cover both databases with and without Celery: the default
bake (PostgreSQL, Celery) on SQLite here and on PostgreSQL in
tests/test_model_column.py, with one column added to the sample model (one
run of the heaviest suite instead of two); a bake without Celery on
PostgreSQL, and a SQLite-only bake without Celery.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from prerequisites import require_python
from template_tools.environment import clean_env
from template_tools.process import run
from template_tools.template import bake_into, defaults

pytestmark = pytest.mark.slow

InstallProject = Callable[..., tuple[Path, Path]]


@pytest.fixture(scope="module")
def install_project(
    tmp_path_factory: pytest.TempPathFactory,
    cookiecutter_config: Path,
    uv_cache_dir: Path,
) -> InstallProject:
    """``install_project(**extra_context)`` -> (project dir, venv python).

    Bakes, creates ``<project>/.venv`` with the chosen python and installs the
    project with its dev extra. Each distinct context is installed once per
    module, so the SQLite and PostgreSQL runs of one bake share it.
    """
    installed: dict[tuple[tuple[str, Any], ...], tuple[Path, Path]] = {}
    make_env = clean_env(UV_CACHE_DIR=str(uv_cache_dir), UV_LINK_MODE="copy")

    def _install(**extra_context: Any) -> tuple[Path, Path]:
        key = tuple(sorted(extra_context.items()))
        if key in installed:
            return installed[key]
        # The interpreter's real path: no pyenv shim or uv download surprises.
        python = require_python({**defaults(), **extra_context}["python_version"])
        output_dir = tmp_path_factory.mktemp("suite")
        project = bake_into(output_dir, cookiecutter_config, **extra_context)
        # The project's own install step, as its README tells users to run it.
        result = run(["make", "install", f"PYTHON={python}"], project, make_env)
        assert result.returncode == 0, result.stdout
        installed[key] = project, Path(python)
        return installed[key]

    return _install


def run_suite(project: Path, python: Path, **env: str) -> None:
    """``make test``, the generated README's test command."""
    result = run(
        ["make", "test", f"PYTHON={python}", "PYTEST_ARGS=-p no:cacheprovider"],
        cwd=project,
        env=clean_env(**env),
        # A bound on a hung suite, not a benchmark: the default bake's runs
        # in about 5 minutes alone, and three times that beside other work.
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout
    assert " passed" in result.stdout, result.stdout
    assert "skipped" not in result.stdout, result.stdout


# Two independent installs and runs: each its own xdist group (conftest.py).
@pytest.mark.xdist_group("suite-default-sqlite")
def test_default_bake_passes_its_suite_on_sqlite(
    install_project: InstallProject,
) -> None:
    project, python = install_project()
    run_suite(project, python)


@pytest.mark.xdist_group("suite-sqlite-python313-no-celery")
def test_sqlite_python313_no_celery_bake_passes_its_suite(
    install_project: InstallProject,
) -> None:
    project, python = install_project(
        database="sqlite", python_version="3.13", use_celery="n"
    )
    run_suite(project, python)


@pytest.mark.xdist_group("suite-postgresql-no-celery")
def test_no_celery_bake_passes_its_suite_on_postgresql(
    install_project: InstallProject, postgres_url: str
) -> None:
    project, python = install_project(use_celery="n")
    run_suite(project, python, DATABASE_URL=postgres_url)

"""Shared fixtures of the template test suite."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from prerequisites import require_service
from template_tools.postgres import throwaway_database
from template_tools.template import (
    REPO_ROOT,
    bake_into,
    dependency_combinations,
    write_cookiecutter_config,
)

POSTGRES_HOST = os.environ.get("POSTGRES_HOST", "127.0.0.1")
POSTGRES_PORT = int(os.environ.get("POSTGRES_PORT", "5432"))
POSTGRES_USER = os.environ.get("POSTGRES_USER", "postgres")


# The modules that install generated projects and run their suites, longest
# first. pytest.ini runs the suite on every CPU (pytest-xdist, --dist
# loadgroup): these start first, one per worker, and the quick modules fill
# in around them. Measured alone: test_model_column about 400 s,
# test_generated_suite 330 s + 140 s, test_cruft 150 s, test_e2e_stack 60 s.
LONGEST_FIRST = (
    "test_model_column.py",
    "test_generated_suite.py",
    "test_cruft.py",
    "test_e2e_stack.py",
    "test_container_commands.py",
    "test_typecheck.py",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "slow: installs and runs a generated project (runs by default; "
        "deselect with -m 'not slow')",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest modules first; each module is one xdist group (one worker
    builds its module-scoped bakes and stacks once) unless a test names its
    own group, as the independent suite runs of test_generated_suite do.

    ``tryfirst``: xdist reads the groups in its own hook of the same name."""
    for item in items:
        if item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(item.path.name))

    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def cookiecutter_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_cookiecutter_config(tmp_path_factory.mktemp("cookiecutter"))


@pytest.fixture
def bake(tmp_path: Path, cookiecutter_config: Path) -> Callable[..., Path]:
    """``bake(**extra_context)`` -> path of a freshly generated project.

    Each call bakes into its own output directory under ``tmp_path``.
    """
    counter = itertools.count()

    def _bake(**extra_context: Any) -> Path:
        output_dir = tmp_path / f"bake-{next(counter)}"
        return bake_into(output_dir, cookiecutter_config, **extra_context)

    return _bake


STACK_COMBINATIONS = dependency_combinations()


def stack_id(combination: dict[str, str]) -> str:
    return f"{combination['database']}-celery={combination['use_celery']}"


@pytest.fixture(scope="session", params=STACK_COMBINATIONS, ids=stack_id)
def stack_bake(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    cookiecutter_config: Path,
) -> tuple[Path, dict[str, str]]:
    """(project, combination): one bake per ``STACK_COMBINATIONS`` entry,
    shared by every module that reads those files. Tests must not change it."""
    output_dir = tmp_path_factory.mktemp("stack")
    project = bake_into(output_dir, cookiecutter_config, **request.param)
    return project, request.param


@pytest.fixture(scope="session")
def uv_cache_dir() -> Path:
    """One uv cache for the whole run (and across runs): installs stay fast."""
    path = REPO_ROOT / ".cache" / "uv"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """URL of a new, empty PostgreSQL database, dropped after the test."""
    require_service("PostgreSQL", POSTGRES_HOST, POSTGRES_PORT)
    server = f"postgresql://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}"
    with throwaway_database(server, "template_test") as url:
        yield url

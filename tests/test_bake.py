"""Pairwise matrix of the template options: every bake is clean and lints.

The options come from ``cookiecutter.json`` (every choice or yes/no question),
so an option added there joins the matrix without touching this file.
"""

from __future__ import annotations

import itertools
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from allpairspy import AllPairs

from prerequisites import require_python
from template_tools.process import run
from template_tools.template import bake_into, choice_options, lines_matching

OPTIONS = choice_options()
JINJA_MARKERS = ("{{ cookiecutter", "{%", "%}", "{#")
PATH_MARKERS = ("{{", "}}", "{%", "%}")


def pairwise(options: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Combinations that together hold every pair of values of any two options."""
    names = list(options)
    if len(names) < 2:  # allpairspy needs two parameters; nothing to pair anyway
        rows = itertools.product(*options.values())
    else:
        rows = AllPairs(list(options.values()))
    return [dict(zip(names, row, strict=True)) for row in rows]


COMBINATIONS = pairwise(OPTIONS)


def combination_id(combination: dict[str, Any]) -> str:
    return ",".join(f"{key}={value}" for key, value in combination.items())


def test_matrix_covers_every_pair_of_option_values() -> None:
    for combination in COMBINATIONS:
        assert set(combination) == set(OPTIONS)
        for key, value in combination.items():
            assert value in OPTIONS[key], combination

    missing = [
        ((first, a), (second, b))
        for first, second in itertools.combinations(OPTIONS, 2)
        for a, b in itertools.product(OPTIONS[first], OPTIONS[second])
        if not any(c[first] == a and c[second] == b for c in COMBINATIONS)
    ]
    assert missing == []
    # With fewer than two options there are no pairs: check single values.
    for key, values in OPTIONS.items():
        assert {c[key] for c in COMBINATIONS} == set(values)


@pytest.fixture(scope="module", params=COMBINATIONS, ids=combination_id)
def baked(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    cookiecutter_config: Path,
) -> tuple[Path, dict[str, Any]]:
    """One bake per combination, shared by the checks below."""
    combination = request.param
    output_dir = tmp_path_factory.mktemp("matrix")
    return bake_into(output_dir, cookiecutter_config, **combination), combination


def test_bake_succeeds(baked: tuple[Path, dict[str, Any]]) -> None:
    project, _ = baked
    assert project.is_dir()
    assert (project / "pyproject.toml").is_file()


def test_no_jinja_left_in_file_names(baked: tuple[Path, dict[str, Any]]) -> None:
    project, _ = baked
    leftovers = [
        str(path.relative_to(project))
        for path in project.rglob("*")
        if any(marker in path.name for marker in PATH_MARKERS)
    ]
    assert leftovers == []


def test_no_jinja_left_in_files(baked: tuple[Path, dict[str, Any]]) -> None:
    project, _ = baked
    leftovers = lines_matching(
        project, lambda line: any(marker in line for marker in JINJA_MARKERS)
    )
    assert leftovers == [], "\n".join(leftovers)


# What only a Celery project has: a bake without Celery mentions none of it.
CELERY_TRACES = re.compile(
    r"celery|\bredis(_url)?\b|\bworker\.py\b|\bjobs?\b", re.IGNORECASE
)
# GitHub Actions' own vocabulary: a workflow's top-level `jobs:` key.
WORKFLOW_JOBS_KEY = re.compile(r"^\.github/workflows/[^:]+:\d+: jobs:$")


def test_without_celery_nothing_of_it_remains(
    baked: tuple[Path, dict[str, Any]],
) -> None:
    project, combination = baked
    if combination.get("use_celery") != "n":
        return
    paths = [
        str(path.relative_to(project))
        for path in project.rglob("*")
        if CELERY_TRACES.search(path.name) and ".ruff_cache" not in path.parts
    ]
    assert paths == []
    mentions = [
        mention
        for mention in lines_matching(
            project, lambda line: bool(CELERY_TRACES.search(line))
        )
        if not WORKFLOW_JOBS_KEY.match(mention)
    ]
    assert mentions == [], "\n".join(mentions)


def test_ruff_check_passes(baked: tuple[Path, dict[str, Any]]) -> None:
    project, _ = baked
    result = run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], project)
    assert result.returncode == 0, result.stdout


def test_ruff_format_is_clean(baked: tuple[Path, dict[str, Any]]) -> None:
    project, _ = baked
    result = run(
        [
            sys.executable,
            "-m",
            "ruff",
            "format",
            "--no-cache",
            "--check",
            "--diff",
            ".",
        ],
        project,
    )
    assert result.returncode == 0, result.stdout


def test_compiles_with_the_chosen_python(baked: tuple[Path, dict[str, Any]]) -> None:
    project, combination = baked
    python = require_python(combination["python_version"])
    result = run([python, "-m", "compileall", "-q", "."], project)
    assert result.returncode == 0, result.stdout

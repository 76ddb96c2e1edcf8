"""The template's own Python (hooks/, tests/, bench/, scripts/) follows ruff.toml.

The template directory is excluded there: it is Jinja until baked, and every
bake is linted with its own config by test_bake.py.
"""

from __future__ import annotations

import sys

import pytest

from template_support import REPO_ROOT, run


@pytest.mark.parametrize(
    "command",
    [["check"], ["format", "--check", "--diff"]],
    ids=["ruff-check", "ruff-format"],
)
def test_template_python_is_clean(command: list[str]) -> None:
    paths = ["hooks", "tests", "bench", "scripts"]
    ruff = [sys.executable, "-m", "ruff", *command, "--no-cache", *paths]
    result = run(ruff, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 0, result.stdout

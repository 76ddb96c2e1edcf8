"""The template's own Python (hooks/, template_tools/, tests/, bench/, scripts/)
follows ruff.toml.

The template directory is excluded there: it is Jinja until baked, and every
bake is linted with its own config by test_bake.py.
"""

from __future__ import annotations

import sys

import pytest

from template_tools.process import run
from template_tools.template import REPO_ROOT


@pytest.mark.parametrize(
    "command",
    [["check"], ["format", "--check", "--diff"]],
    ids=["ruff-check", "ruff-format"],
)
def test_template_python_is_clean(command: list[str]) -> None:
    paths = ["hooks", "template_tools", "tests", "bench", "scripts"]
    ruff = [sys.executable, "-m", "ruff", *command, "--no-cache", *paths]
    result = run(ruff, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 0, result.stdout

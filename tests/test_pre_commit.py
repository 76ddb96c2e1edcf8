"""The generated .pre-commit-config.yaml: plain YAML that pre-commit accepts,
every hook repository pinned to a release tag."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from template_tools.process import run
from template_tools.template import bake_into

CONFIG = ".pre-commit-config.yaml"
TOOLS = Path(sys.executable).parent
RELEASE_TAG = re.compile(r"^v?\d+\.\d+\.\d+$")
EXPECTED_HOOKS = {
    "trailing-whitespace",
    "end-of-file-fixer",
    "check-yaml",
    "check-toml",
    "check-added-large-files",
    "detect-private-key",
    "ruff-check",
    "ruff-format",
    "check-compose-spec",
    "check-github-workflows",
}


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory, cookiecutter_config: Path
) -> Path:
    return bake_into(
        tmp_path_factory.mktemp("pre-commit"),
        cookiecutter_config,
        database="sqlite",
        use_celery="n",
    )


def test_config_is_the_template_file_verbatim(repo_root: Path, project: Path) -> None:
    """No Jinja: the bake is a byte-for-byte copy, whatever the options."""
    source = repo_root / "{{cookiecutter.project_slug}}" / CONFIG
    assert (project / CONFIG).read_bytes() == source.read_bytes()
    assert "{{" not in source.read_text(encoding="utf-8")
    assert "{%" not in source.read_text(encoding="utf-8")


def test_hooks_are_pinned_to_release_tags(project: Path) -> None:
    config = yaml.safe_load((project / CONFIG).read_text(encoding="utf-8"))
    repos = config["repos"]
    assert [repo["rev"] for repo in repos if not RELEASE_TAG.match(repo["rev"])] == []
    hooks = {hook["id"] for repo in repos for hook in repo["hooks"]}
    assert hooks == EXPECTED_HOOKS


def test_pre_commit_accepts_the_config(project: Path) -> None:
    result = run(
        [str(TOOLS / "pre-commit"), "validate-config", CONFIG], cwd=project, timeout=60
    )
    assert result.returncode == 0, result.stdout


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.removeprefix("v").split("."))


def test_ruff_hook_is_not_older_than_the_dev_extra(project: Path) -> None:
    """The hook and `make lint` must not disagree: the pinned ruff satisfies
    the dev extra's lower bound."""
    config = yaml.safe_load((project / CONFIG).read_text(encoding="utf-8"))
    (ruff_rev,) = [
        repo["rev"]
        for repo in config["repos"]
        if repo["repo"].endswith("/ruff-pre-commit")
    ]
    pyproject = (project / "pyproject.toml").read_text(encoding="utf-8")
    minimum = re.search(r'"ruff>=([\d.]+)"', pyproject)
    assert minimum is not None
    assert version_tuple(ruff_rev) >= version_tuple(minimum.group(1))


# pre-commit-hooks' entry points, as the config runs them on every file
# (check-added-large-files needs a git repository, so it is left out).
HYGIENE_HOOKS = ["trailing-whitespace-fixer", "end-of-file-fixer", "detect-private-key"]


@pytest.mark.parametrize(
    "options",
    [
        {"database": "sqlite", "use_celery": "n"},
        {"database": "postgresql", "use_celery": "y"},
    ],
    ids=["sqlite-celery_n", "postgresql-celery_y"],
)
@pytest.mark.parametrize("hook", HYGIENE_HOOKS)
def test_a_fresh_bake_passes_the_hygiene_hooks(
    hook: str, options: dict[str, str], bake: Callable[..., Path]
) -> None:
    """A new project's first `pre-commit run --all-files` changes nothing."""
    project = bake(**options)
    files = sorted(str(path) for path in project.rglob("*") if path.is_file())
    result = run([str(TOOLS / hook), *files], cwd=project, timeout=120)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("hook", "suffixes"),
    [("check-yaml", {".yaml", ".yml"}), ("check-toml", {".toml"})],
)
def test_a_fresh_bake_has_parseable_config_files(
    hook: str, suffixes: set[str], bake: Callable[..., Path]
) -> None:
    project = bake(database="postgresql", use_celery="y")
    files = [
        str(path)
        for path in project.rglob("*")
        if path.is_file() and path.suffix in suffixes
    ]
    assert files
    result = run([str(TOOLS / hook), *files], cwd=project, timeout=120)
    assert result.returncode == 0, result.stdout

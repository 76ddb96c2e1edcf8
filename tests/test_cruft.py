"""Keeping a generated project up to date with cruft, as README.md tells users
to: create and link, check, update with the user's edits kept, the conflicts
a user sees, and the template version a project records.

cruft clones the template with git and only reads committed content, so each
test commits a copy of this checkout (tracked files plus new ones git does not
ignore, as they are in the work tree) to a repository of its own, then
commits template changes on top of it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from cookiecutter.main import cookiecutter
from packaging.version import Version

from prerequisites import require_python
from template_tools.environment import clean_env
from template_tools.process import run
from template_tools.template import REPO_ROOT, load_cookiecutter_json

CRUFT = Path(sys.executable).parent / "cruft"
# The generated pyproject.toml's table holding the template version.
TEMPLATE_TABLE = "flask-service-template"
# The template repository's directory, as README.md calls it: cookiecutter
# names its replay file after it.
TEMPLATE_NAME = "flask-service-template"

# Answers other than the defaults: a name of its own, every choice changed.
OTHER_ANSWERS = {
    "project_name": "Acme Billing",
    "python_version": "3.13",
    "database": "sqlite",
    "use_celery": "n",
    "open_source_license": "BSD-3-Clause",
}
PACKAGE = "acme_billing"
CONFIG_PY = f"src/{PACKAGE}/config.py"
HEALTH_ROUTES_PY = f"src/{PACKAGE}/health/routes.py"
TEMPLATE_CONFIG_PY = (
    "{{cookiecutter.project_slug}}/src/{{cookiecutter.package_name}}/config.py"
)
TEMPLATE_ENV_EXAMPLE = "{{cookiecutter.project_slug}}/.env.example"

# The setting the user changes, and the line the template changes in the
# same file, far enough from it for a clean merge.
SETTING = "BACKGROUND_THREADS: int = Field(4, ge=1)"
USER_SETTING = "BACKGROUND_THREADS: int = Field(8, ge=1)"
TEMPLATE_SETTING = "BACKGROUND_THREADS: int = Field(6, ge=1)"
DOCSTRING = '"""Settings shared by every environment, each read from its variable."""'
NEW_DOCSTRING = '"""Settings shared by every environment, read once per app."""'
NEW_ENV_EXAMPLE_LINE = "# READINESS_TIMEOUT_SECONDS=2\n"

USER_ROUTE = """

@bp.get("/version")
def version() -> dict[str, str]:
    return {"version": "2026.11"}
"""
USER_TEST = '''"""Our own route and setting."""

from flask import Flask
from flask.testing import FlaskClient


def test_version_route(client: FlaskClient) -> None:
    response = client.get("/version")
    assert response.status_code == 200
    assert response.get_json() == {"version": "2026.11"}


def test_background_threads(app: Flask) -> None:
    assert app.config["BACKGROUND_THREADS"] == 8
'''


def template_version() -> str:
    return load_cookiecutter_json()["_template_version"]


def git_env(**extra: str) -> dict[str, str]:
    """git (and cruft's git) with a fixed identity and none of the user's
    config: a global ``commit.gpgsign`` or hook must not change the result."""
    return clean_env(
        GIT_AUTHOR_NAME="Template Tests",
        GIT_AUTHOR_EMAIL="tests@example.com",
        GIT_COMMITTER_NAME="Template Tests",
        GIT_COMMITTER_EMAIL="tests@example.com",
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        **extra,
    )


def git(cwd: Path, *args: str) -> str:
    result = run(["git", *args], cwd, git_env(), timeout=120)
    assert result.returncode == 0, f"git {' '.join(args)}:\n{result.stdout}"
    return result.stdout


def commit_all(cwd: Path, message: str) -> str:
    git(cwd, "add", "--all")
    git(cwd, "commit", "--quiet", "--message", message)
    return git(cwd, "rev-parse", "HEAD").strip()


def cruft(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The cruft CLI, as a user runs it; output and errors together."""
    result = run([str(CRUFT), *args], cwd, git_env(), timeout=300)
    # Shown by `pytest -rA`: what a user sees.
    print(f"$ cruft {' '.join(args)}  (exit {result.returncode})\n{result.stdout}")
    return result


def edit(path: Path, old: str, new: str) -> None:
    """Replace the one occurrence of ``old``; fails when the anchor moved."""
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, f"{old!r} is not once in {path}"
    path.write_text(text.replace(old, new), encoding="utf-8")


def append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as file:
        file.write(text)


def checkout_files() -> list[str]:
    """The files a commit of this checkout would hold: tracked files and new
    ones git does not ignore, as they are in the work tree (deleted ones
    left out)."""
    result = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        env=git_env(),
    )
    assert result.returncode == 0, f"the template is not a git checkout: {result}"
    names = {name for name in result.stdout.split("\0") if name}
    return sorted(name for name in names if (REPO_ROOT / name).is_file())


@pytest.fixture(scope="module")
def template_snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    snapshot = tmp_path_factory.mktemp("snapshot") / TEMPLATE_NAME
    for name in checkout_files():
        target = snapshot / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / name, target)
    assert (snapshot / "cookiecutter.json").is_file()
    return snapshot


class Template:
    """A git repository holding the template: commit A is this checkout."""

    def __init__(self, path: Path) -> None:
        self.path = path
        git(path, "init", "--quiet", "--initial-branch=main")
        self.commit_a = commit_all(path, "A: the template as checked out")

    def file(self, name: str) -> Path:
        return self.path / name

    def release(self, version: str, message: str) -> str:
        """Bump the version and the CHANGELOG, then commit what changed."""
        edit(
            self.file("cookiecutter.json"),
            f'"_template_version": "{template_version()}"',
            f'"_template_version": "{version}"',
        )
        changelog = self.file("CHANGELOG.md")
        text = changelog.read_text(encoding="utf-8")
        first = text.index("\n## ")
        entry = f"\n## {version}\n\n- {message}\n"
        changelog.write_text(text[:first] + entry + text[first:], encoding="utf-8")
        return commit_all(self.path, f"{version}: {message}")


@pytest.fixture
def template(tmp_path: Path, template_snapshot: Path) -> Template:
    path = tmp_path / TEMPLATE_NAME
    shutil.copytree(template_snapshot, path)
    return Template(path)


def next_version() -> str:
    major, minor, patch = Version(template_version()).release
    return f"{major}.{minor}.{patch + 1}"


def write_answers(directory: Path, answers: dict[str, str]) -> Path:
    path = directory / "answers.json"
    path.write_text(json.dumps(answers), encoding="utf-8")
    return path


def cruft_create(
    template: Template, output_dir: Path, answers_file: Path, config: Path
) -> Path:
    """``cruft create`` without prompts; returns the project directory."""
    output_dir.mkdir(parents=True)
    result = cruft(
        output_dir,
        "create",
        "--no-input",
        "--config-file",
        str(config),
        "--extra-context-file",
        str(answers_file),
        "--output-dir",
        str(output_dir),
        str(template.path),
    )
    assert result.returncode == 0, result.stdout
    (project,) = output_dir.iterdir()
    return project


def cookiecutter_bake(
    template: Template, output_dir: Path, answers_file: Path, config: Path
) -> Path:
    """A plain cookiecutter bake of the same template and answers."""
    answers = json.loads(answers_file.read_text(encoding="utf-8"))
    project = cookiecutter(
        str(template.path),
        no_input=True,
        extra_context=answers,
        output_dir=str(output_dir),
        config_file=str(config),
    )
    return Path(project)


def tree(project: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every path of a project: its permission bits and, for files, bytes."""
    return {
        str(path.relative_to(project)): (
            stat_mode(path),
            path.read_bytes() if path.is_file() else None,
        )
        for path in sorted(project.rglob("*"))
    }


def stat_mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def rejects(project: Path) -> list[str]:
    return sorted(str(path.relative_to(project)) for path in project.rglob("*.rej"))


def git_status(project: Path) -> list[str]:
    return sorted(git(project, "status", "--porcelain").splitlines())


def cruft_state(project: Path) -> dict[str, Any]:
    return json.loads((project / ".cruft.json").read_text(encoding="utf-8"))


def recorded_version(project: Path) -> str:
    pyproject = tomllib.loads((project / "pyproject.toml").read_text("utf-8"))
    return pyproject["tool"][TEMPLATE_TABLE]["version"]


# --- create and link -----------------------------------------------------


@pytest.mark.parametrize(
    "answers", [{}, OTHER_ANSWERS], ids=["defaults", "other-answers"]
)
def test_cruft_create_gives_the_cookiecutter_project(
    template: Template,
    tmp_path: Path,
    cookiecutter_config: Path,
    answers: dict[str, str],
) -> None:
    answers_file = write_answers(tmp_path, answers)

    created = cruft_create(
        template, tmp_path / "cruft", answers_file, cookiecutter_config
    )
    baked = cookiecutter_bake(
        template, tmp_path / "cookiecutter", answers_file, cookiecutter_config
    )

    assert created.name == baked.name
    created_tree = tree(created)
    assert created_tree.pop(".cruft.json")
    assert sorted(created_tree) == sorted(tree(baked))
    different = [
        name for name, entry in tree(baked).items() if created_tree[name] != entry
    ]
    assert different == []

    state = cruft_state(created)
    assert state["template"] == str(template.path)
    assert state["commit"] == template.commit_a
    context = state["context"]["cookiecutter"]
    assert {key: context[key] for key in answers} == answers
    assert context["_template_version"] == template_version()
    assert recorded_version(created) == template_version()


def test_cruft_link_adopts_a_cookiecutter_project(
    template: Template, tmp_path: Path, cookiecutter_config: Path
) -> None:
    """README: link with the answers cookiecutter saved in its replay file;
    ``cruft diff`` then shows nothing, and ``cruft check`` passes."""
    answers_file = write_answers(tmp_path, OTHER_ANSWERS)
    project = cookiecutter_bake(
        template, tmp_path / "out", answers_file, cookiecutter_config
    )
    git(project, "init", "--quiet", "--initial-branch=main")
    commit_all(project, "Generated with cookiecutter")
    config = yaml.safe_load(cookiecutter_config.read_text(encoding="utf-8"))
    replay = Path(config["replay_dir"]) / f"{TEMPLATE_NAME}.json"
    saved_answers = json.loads(replay.read_text(encoding="utf-8"))["cookiecutter"]

    def link(*options: str) -> subprocess.CompletedProcess[str]:
        return cruft(
            project,
            "link",
            "--no-input",
            "--checkout",
            template.commit_a,
            "--config-file",
            str(cookiecutter_config),
            *options,
            str(template.path),
        )

    # Linked with the defaults instead of its answers, the template renders
    # another project: cruft diff says so.
    assert link().returncode == 0
    assert cruft(project, "diff", "--exit-code").returncode == 1
    (project / ".cruft.json").unlink()

    result = link("--extra-context", json.dumps(saved_answers))

    assert result.returncode == 0, result.stdout
    diff = cruft(project, "diff", "--exit-code")
    assert diff.returncode == 0, diff.stdout
    # Only the post-gen hook's next steps, printed as cruft renders.
    assert "diff --git" not in diff.stdout
    assert cruft_state(project)["commit"] == template.commit_a
    check = cruft(project, "check")
    assert check.returncode == 0, check.stdout
    assert "up to date" in check.stdout


# --- update --------------------------------------------------------------


def generated_project(
    template: Template, tmp_path: Path, config: Path, *, commit: bool = True
) -> Path:
    """``cruft create`` with ``OTHER_ANSWERS``, committed to a git repository
    of its own as the README says (``commit=False``: not yet committed)."""
    answers_file = write_answers(tmp_path, OTHER_ANSWERS)
    project = cruft_create(template, tmp_path / "out", answers_file, config)
    git(project, "init", "--quiet", "--initial-branch=main")
    if commit:
        commit_all(project, "Generated with cruft")
    return project


@pytest.mark.slow
def test_update_brings_template_changes_and_keeps_the_users(
    template: Template,
    tmp_path: Path,
    cookiecutter_config: Path,
    uv_cache_dir: Path,
) -> None:
    python = require_python(OTHER_ANSWERS["python_version"])
    project = generated_project(template, tmp_path, cookiecutter_config)
    assert cruft(project, "check").returncode == 0

    # The user adds a route (and its test) and changes a setting.
    append(project / HEALTH_ROUTES_PY, USER_ROUTE)
    (project / "tests" / "test_our_changes.py").write_text(USER_TEST, "utf-8")
    edit(project / CONFIG_PY, SETTING, USER_SETTING)
    commit_all(project, "Our route and setting")

    # The template changes a file the user left alone and, elsewhere in it,
    # one the user changed; then releases a new version.
    append(template.file(TEMPLATE_ENV_EXAMPLE), NEW_ENV_EXAMPLE_LINE)
    edit(template.file(TEMPLATE_CONFIG_PY), DOCSTRING, NEW_DOCSTRING)
    commit_b = template.release(next_version(), "a documented setting")

    check = cruft(project, "check")
    assert check.returncode == 1, check.stdout
    assert "out of date" in check.stdout

    update = cruft(project, "update", "--skip-apply-ask")

    assert update.returncode == 0, update.stdout
    assert "Good work! Project's cruft has been updated" in update.stdout
    assert "conflict" not in update.stdout.lower()
    assert "Failed to apply" not in update.stdout
    assert rejects(project) == []
    # Only B's changes, uncommitted for review: the hooks, run again on both
    # renders, added or changed nothing else (no .env, no LICENSE).
    # (`git apply -3` stages what it merged; cruft leaves .cruft.json unstaged.)
    assert git_status(project) == [
        " M .cruft.json",
        "M  .env.example",
        "M  pyproject.toml",
        f"M  {CONFIG_PY}",
    ]
    assert (project / ".env.example").read_text("utf-8").endswith(NEW_ENV_EXAMPLE_LINE)
    config = (project / CONFIG_PY).read_text(encoding="utf-8")
    assert NEW_DOCSTRING in config
    assert USER_SETTING in config
    assert USER_ROUTE in (project / HEALTH_ROUTES_PY).read_text(encoding="utf-8")
    assert recorded_version(project) == next_version()
    assert cruft_state(project)["commit"] == commit_b
    check = cruft(project, "check")
    assert check.returncode == 0, check.stdout
    commit_all(project, f"Template {next_version()}")

    # The updated project installs and passes its own suite, ours included.
    make_env = clean_env(UV_CACHE_DIR=str(uv_cache_dir), UV_LINK_MODE="copy")
    result = run(["make", "install", f"PYTHON={python}"], project, make_env)
    assert result.returncode == 0, result.stdout
    result = run(
        ["make", "test", f"PYTHON={python}", "PYTEST_ARGS=-p no:cacheprovider -v"],
        project,
        clean_env(),
        timeout=1800,  # as test_generated_suite's: a bound on a hung suite
    )
    assert result.returncode == 0, result.stdout
    assert "test_our_changes.py::test_version_route PASSED" in result.stdout
    assert "test_our_changes.py::test_background_threads PASSED" in result.stdout
    assert "SKIPPED" not in result.stdout, result.stdout
    assert git_status(project) == [], "make install or make test dirtied git"


CONFLICT_CASES = ["conflict-markers", "rej-file", "skip-list"]


@pytest.mark.parametrize("case", CONFLICT_CASES)
def test_update_of_a_line_the_user_changed_too(
    template: Template, tmp_path: Path, cookiecutter_config: Path, case: str
) -> None:
    """The user and the template change the same setting. With the generated
    files in the project's history, git merges and leaves conflict markers;
    without them (the user edited before the first commit) cruft falls back
    to ``.rej`` files; listed in cruft's skip list, the file is left alone."""
    project = generated_project(
        template, tmp_path, cookiecutter_config, commit=case != "rej-file"
    )
    edit(project / CONFIG_PY, SETTING, USER_SETTING)
    if case == "skip-list":
        state = cruft_state(project)
        state["skip"] = [CONFIG_PY]
        (project / ".cruft.json").write_text(json.dumps(state, indent=2), "utf-8")
    commit_all(project, "Our setting")

    edit(template.file(TEMPLATE_CONFIG_PY), SETTING, TEMPLATE_SETTING)
    append(template.file(TEMPLATE_ENV_EXAMPLE), NEW_ENV_EXAMPLE_LINE)
    commit_b = template.release(next_version(), "more background threads")

    update = cruft(project, "update", "--skip-apply-ask")

    # cruft exits 0 and records the new commit even when a hunk conflicts:
    # `git status` is where the user sees what is left to do.
    assert update.returncode == 0, update.stdout
    assert "Good work! Project's cruft has been updated" in update.stdout
    assert cruft_state(project)["commit"] == commit_b
    assert (project / ".env.example").read_text("utf-8").endswith(NEW_ENV_EXAMPLE_LINE)
    assert recorded_version(project) == next_version()
    config = (project / CONFIG_PY).read_text(encoding="utf-8")
    status = git_status(project)
    if case == "conflict-markers":
        assert f"Applied patch to '{CONFIG_PY}' with conflicts." in update.stdout
        assert f"U {CONFIG_PY}" in update.stdout
        assert f"UU {CONFIG_PY}" in status
        assert rejects(project) == []
        markers = re.search(
            r"^<<<<<<< ours\n(.*)\n=======\n(.*)\n>>>>>>> theirs$",
            config,
            flags=re.MULTILINE,
        )
        assert markers, config
        assert USER_SETTING in markers.group(1)
        assert TEMPLATE_SETTING in markers.group(2)
    elif case == "rej-file":
        assert "lacks the necessary blob to perform 3-way merge" in update.stdout
        assert "Failed to apply the update. Retrying" in update.stdout
        assert "Project directory may have *.rej files" in update.stdout
        assert "Rejected hunk #1." in update.stdout
        assert rejects(project) == [f"{CONFIG_PY}.rej"]
        rejected = (project / f"{CONFIG_PY}.rej").read_text(encoding="utf-8")
        assert re.search(rf"^-.*{re.escape(SETTING)}$", rejected, re.MULTILINE)
        assert re.search(rf"^\+.*{re.escape(TEMPLATE_SETTING)}$", rejected, re.M)
        assert USER_SETTING in config
        assert f"?? {CONFIG_PY}.rej" in status
    else:
        assert "conflict" not in update.stdout.lower()
        assert rejects(project) == []
        assert USER_SETTING in config
        assert TEMPLATE_SETTING not in config
        assert f" M {CONFIG_PY}" not in status


# --- the template version --------------------------------------------------

CHANGELOG = REPO_ROOT / "CHANGELOG.md"
SECTION = re.compile(r"^## (\S+)$", re.MULTILINE)


def test_changelog_newest_section_is_the_template_version() -> None:
    versions = SECTION.findall(CHANGELOG.read_text(encoding="utf-8"))
    assert versions, "CHANGELOG.md has no '## <version>' section"
    assert versions[0] == template_version()
    parsed = [Version(version) for version in versions]
    assert parsed == sorted(parsed, reverse=True), "sections newest first"
    assert len(set(parsed)) == len(parsed)


def test_every_changelog_section_says_what_to_do_by_hand() -> None:
    sections = SECTION.split(CHANGELOG.read_text(encoding="utf-8"))[1:]
    for version, body in zip(sections[::2], sections[1::2], strict=True):
        assert "### By hand" in body, version


def test_the_project_records_the_template_version(bake) -> None:
    project = bake()
    assert recorded_version(project) == template_version()


# --- the generated workflow -----------------------------------------------


def test_workflow_runs_cruft_check_only_with_a_cruft_file(bake) -> None:
    workflow = yaml.safe_load(
        (bake() / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8")
    )
    job = workflow["jobs"]["template"]
    # Optional and non-blocking: it reaches the template repository, and a
    # new template release is news, not a broken build.
    assert job["continue-on-error"] is True
    steps = job["steps"]
    assert steps[0]["uses"].startswith("actions/checkout@")
    for step in steps[1:]:
        assert step["if"] == "hashFiles('.cruft.json') != ''", step
    (script,) = [step["run"] for step in steps if "run" in step]
    # The cruft the template tests exercise is the one the workflow runs.
    assert f"cruft=={metadata.version('cruft')}" in script
    assert script.rstrip().endswith("cruft check")

"""The generated GitHub Actions workflow: valid, clean for zizmor, locked down,
and running services and make targets that match the chosen options."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from template_tools.process import run

WORKFLOW = Path(".github/workflows/ci.yml")
TOOLS = Path(sys.executable).parent
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"uses: (\S+) # v\d+\.\d+\.\d+$")
HEALTH_CHECK = re.compile(r"--health-cmd\b")


def load_workflow(project: Path) -> dict[str, Any]:
    workflow = yaml.safe_load((project / WORKFLOW).read_text(encoding="utf-8"))
    assert isinstance(workflow, dict)
    return workflow


def all_steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def test_matches_the_github_workflow_schema(
    stack_bake: tuple[Path, dict[str, str]],
) -> None:
    project, _ = stack_bake
    result = run(
        [
            str(TOOLS / "check-jsonschema"),
            "--builtin-schema",
            "vendor.github-workflows",
            str(project / WORKFLOW),
        ],
        cwd=project,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout


def test_zizmor_finds_nothing(stack_bake: tuple[Path, dict[str, str]]) -> None:
    """zizmor audits the workflow and the pre-commit config; exit 0 means no
    finding at the default persona, and the JSON list must be empty too."""
    project, _ = stack_bake
    result = run(
        [
            str(TOOLS / "zizmor"),
            "--offline",
            "--no-progress",
            "--color=never",
            "--format=json",
            "--collect=all",
            "--quiet",
            "--",
            ".",
        ],
        cwd=project,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout
    findings = json.loads(result.stdout)
    assert findings == [], result.stdout


def test_every_action_is_pinned_to_a_commit_with_its_version(
    stack_bake: tuple[Path, dict[str, str]],
) -> None:
    project, _ = stack_bake
    uses = [
        step["uses"] for step in all_steps(load_workflow(project)) if "uses" in step
    ]
    assert uses, "the workflow uses no action at all"
    assert [ref for ref in uses if not SHA_PIN.match(ref)] == []
    lines = (project / WORKFLOW).read_text(encoding="utf-8").splitlines()
    uses_lines = [line.strip() for line in lines if line.strip().startswith("- uses:")]
    assert len(uses_lines) == len(uses)
    assert [line for line in uses_lines if not VERSION_COMMENT.search(line)] == []


def test_token_is_read_only_and_never_kept(
    stack_bake: tuple[Path, dict[str, str]],
) -> None:
    project, _ = stack_bake
    workflow = load_workflow(project)
    assert workflow["permissions"] == {"contents": "read"}
    for name, job in workflow["jobs"].items():
        assert "permissions" not in job, f"job {name} widens the token"
    checkouts = [
        step
        for step in all_steps(workflow)
        if step.get("uses", "").startswith("actions/checkout@")
    ]
    assert len(checkouts) == len(workflow["jobs"])
    for step in checkouts:
        assert step["with"]["persist-credentials"] is False


def test_runs_are_bounded(stack_bake: tuple[Path, dict[str, str]]) -> None:
    project, _ = stack_bake
    workflow = load_workflow(project)
    assert workflow["concurrency"]["cancel-in-progress"] is True
    assert "${{ github.ref }}" in workflow["concurrency"]["group"]
    for name, job in workflow["jobs"].items():
        assert 0 < job.get("timeout-minutes", 0) <= 30, name


def makefile_targets(project: Path) -> set[str]:
    text = (project / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([\w-]+):", text, flags=re.MULTILINE))


def test_jobs_run_the_projects_make_targets(
    stack_bake: tuple[Path, dict[str, str]],
) -> None:
    """CI and a developer run the same commands."""
    project, _ = stack_bake
    workflow = load_workflow(project)
    commands = {
        name: [step["run"] for step in job["steps"] if "run" in step]
        for name, job in workflow["jobs"].items()
    }
    assert commands["lint"] == ["make lint"]
    assert commands["typecheck"] == ["make typecheck"]
    # Then flask check-deploy, which has no make target: see below.
    assert commands["test"][0] == "make test"
    assert len(commands["test"]) == 2
    assert commands["migrations"] == ["make migrations-check"]
    targets = makefile_targets(project)
    for target in ("lint", "typecheck", "test", "migrations-check"):
        assert target in targets
    (build,) = commands["image"]
    assert build.startswith("docker build --file deploy/docker/Dockerfile ")
    assert build.endswith(" .")
    assert (project / "deploy" / "docker" / "Dockerfile").is_file()
    python_version = (project / ".python-version").read_text(encoding="utf-8")
    assert python_version.strip() == combination_python(project)


def test_check_deploy_runs_on_production_settings(
    stack_bake: tuple[Path, dict[str, str]],
) -> None:
    """After the tests (which made the .venv), ``flask check-deploy`` checks
    production settings as a deployment would give them: the service
    containers' URLs and a secret generated in the step, never written in
    the file."""
    project, combination = stack_bake
    test_job = load_workflow(project)["jobs"]["test"]
    runs = [step.get("run", "") for step in test_job["steps"]]
    (step,) = [
        step for step in test_job["steps"] if "check-deploy" in step.get("run", "")
    ]
    assert runs.index("make test") < runs.index(step["run"])
    (package,) = [path.parent.name for path in (project / "src").glob("*/wsgi.py")]
    assert f".venv/bin/flask --app {package}.wsgi check-deploy" in step["run"]
    assert "secrets.token_urlsafe(48)" in step["run"]
    env = {**test_job["env"], **step["env"]}
    assert "SECRET_KEY" not in env
    assert env["APP_ENV"] == "production"
    assert env["FLASK_SKIP_DOTENV"] == "1"
    assert env["TRUSTED_HOSTS"]
    if combination["database"] == "postgresql":
        assert env["DATABASE_URL"].startswith("postgresql://postgres@127.0.0.1:5432/")
    else:
        assert env["DATABASE_URL"].startswith("sqlite:////")
    if combination["use_celery"] == "y":
        assert env["REDIS_URL"] == "redis://127.0.0.1:6379/0"
        assert env["EXPORT_DIR"] == "/srv/app/exports"  # where nginx serves them
    else:
        assert "REDIS_URL" not in env


def combination_python(project: Path) -> str:
    """The Python the bake targets, read from its ``requires-python``."""
    pyproject = (project / "pyproject.toml").read_text(encoding="utf-8")
    match = re.search(r'requires-python = ">=(\d+\.\d+)"', pyproject)
    assert match, "requires-python not found"
    return match.group(1)


def test_services_match_the_options(stack_bake: tuple[Path, dict[str, str]]) -> None:
    project, combination = stack_bake
    workflow = load_workflow(project)
    postgres = combination["database"] == "postgresql"
    celery = combination["use_celery"] == "y"

    test_job = workflow["jobs"]["test"]
    services = test_job.get("services", {})
    expected = {"postgres"} if postgres else set()
    expected |= {"redis"} if celery else set()
    assert set(services) == expected
    for name, service in services.items():
        assert HEALTH_CHECK.search(service["options"]), name
    assert {"postgres": "5432:5432", "redis": "6379:6379"}.items() >= {
        name: service["ports"][0] for name, service in services.items()
    }.items()

    env = test_job["env"]
    assert env["CI"] == "true"
    # REDIS_URL would switch every test app to Redis; the tests find it at
    # its default address instead.
    assert "REDIS_URL" not in env
    if postgres:
        assert env["DATABASE_URL"].startswith("postgresql://postgres@127.0.0.1:5432/")
    else:
        assert "DATABASE_URL" not in env

    migrations = workflow["jobs"]["migrations"]
    assert set(migrations.get("services", {})) == ({"postgres"} if postgres else set())
    assert ("DATABASE_URL" in migrations.get("env", {})) is postgres

"""The generated Dockerfile, .dockerignore and compose files, checked offline.

No Docker engine runs here: the compose files are validated against the
compose specification's JSON schema and their structure is asserted; the
Dockerfile is linted by hadolint. tests/test_container_commands.py runs the
commands and healthchecks these files name.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from template_tools.nginx import (
    CONF,
    EXPORTS,
    SNIPPETS,
    TLS_CONF,
    UPSTREAM,
    gunicorn_settings,
    shipped_text,
)
from template_tools.process import run
from template_tools.template import bake_into, choice_options, lines_matching

OPTIONS = choice_options()
COMPOSE = Path("compose.yaml")
COMPOSE_DEV = Path("compose.override.yaml")
COMPOSE_PROD = Path("deploy") / "compose.prod.yaml"
COMPOSE_FILES = (COMPOSE, COMPOSE_DEV, COMPOSE_PROD)
# nginx terminating TLS on public ports, on top of the production-like run.
COMPOSE_TLS = Path("deploy") / "compose.tls.yaml"
DOCKERFILE = Path("deploy") / "docker" / "Dockerfile"
EXPORT_DIR = "/srv/app/exports"
APP_SERVICES_WITH_CELERY = ("migrate", "web", "worker", "beat")


def load(project: Path, path: Path) -> dict[str, Any]:
    return yaml.safe_load((project / path).read_text(encoding="utf-8"))


def services(project: Path, path: Path = COMPOSE) -> dict[str, dict[str, Any]]:
    return load(project, path)["services"]


def app_services(answers: dict[str, str]) -> list[str]:
    if answers["use_celery"] == "y":
        return list(APP_SERVICES_WITH_CELERY)
    return ["migrate", "web"]


def seconds(duration: str) -> float:
    """A compose duration such as ``45s``, ``1m30s`` or ``1h``, in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts, f"not a duration: {duration!r}"
    assert "".join(n + u for n, u in parts) == duration, duration
    return sum(float(number) * units[unit] for number, unit in parts)


# --- compose -----------------------------------------------------------------


def test_compose_files_follow_the_compose_spec(
    stack_bake: tuple[Path, dict[str, str]],
) -> None:
    project, _ = stack_bake
    command = [
        sys.executable,
        "-m",
        "check_jsonschema",
        "--builtin-schema",
        "vendor.compose-spec",
        *map(str, (*COMPOSE_FILES, COMPOSE_TLS)),
    ]
    result = run(command, cwd=project, timeout=120)
    assert result.returncode == 0, result.stdout


def test_services_follow_the_options(stack_bake: tuple[Path, dict[str, str]]) -> None:
    project, answers = stack_bake
    postgres = answers["database"] == "postgresql"
    celery = answers["use_celery"] == "y"
    expected = {"migrate", "web", "nginx", "jaeger"}
    expected |= {"postgres"} if postgres else set()
    expected |= {"worker", "beat", "redis"} if celery else set()
    assert set(services(project)) == expected
    for path in (COMPOSE_DEV, COMPOSE_PROD, COMPOSE_TLS):
        assert set(services(project, path)) <= expected, path
    environment = services(project)["web"]["environment"]
    assert environment["DATABASE_URL"].startswith(
        "postgresql://" if postgres else "sqlite:"
    )
    assert ("REDIS_URL" in environment) == celery
    assert environment["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"
    volumes = load(project, COMPOSE)["volumes"]
    assert ("pgdata" in volumes) == postgres
    assert ("data" in volumes) == (not postgres)


def test_published_ports_listen_on_loopback_only(
    stack_bake: tuple[Path, dict[str, str]],
) -> None:
    project, _ = stack_bake
    published = [
        (path, name, port)
        for path in COMPOSE_FILES
        for name, service in services(project, path).items()
        for port in service.get("ports", [])
    ]
    assert published, "nothing is published"
    for path, name, port in published:
        assert isinstance(port, str), f"{path}: {name}: write ports as strings"
        assert port.startswith("127.0.0.1:"), f"{path}: {name} publishes {port}"


def test_web_outlasts_gunicorns_graceful_timeout(
    stack_bake: tuple[Path, dict[str, str]],
) -> None:
    project, answers = stack_bake
    graceful = gunicorn_settings(project)["graceful_timeout"]
    web = services(project)["web"]
    assert seconds(web["stop_grace_period"]) > graceful
    if answers["use_celery"] == "y":
        assert seconds(services(project)["worker"]["stop_grace_period"]) > graceful


def test_celery_processes_are_restarted_when_they_exit(
    stack_bake: tuple[Path, dict[str, str]],
) -> None:
    """The worker outlives Redis outages by itself; whatever else stops it
    (or beat) is left to the restart policy (deploy/README.md). Without
    Celery there are neither."""
    project, answers = stack_bake
    for path in (COMPOSE, COMPOSE_PROD):
        stack = services(project, path)
        for name in ("worker", "beat"):
            if answers["use_celery"] != "y":
                assert name not in stack, (path, name)
                continue
            assert stack[name].get("restart") in ("on-failure", "unless-stopped"), (
                path,
                name,
            )


def condition(service: dict[str, Any], dependency: str) -> str | None:
    return service.get("depends_on", {}).get(dependency, {}).get("condition")


def test_services_wait_for_what_they_need(
    stack_bake: tuple[Path, dict[str, str]],
) -> None:
    project, answers = stack_bake
    stack = services(project)
    for name in app_services(answers):
        if name != "migrate":
            assert condition(stack[name], "migrate") == (
                "service_completed_successfully"
            ), name
    if answers["database"] == "postgresql":
        assert condition(stack["migrate"], "postgres") == "service_healthy"
    else:
        assert "depends_on" not in stack["migrate"]
    if answers["use_celery"] == "y":
        for name in ("worker", "beat"):
            assert condition(stack[name], "redis") == "service_healthy", name
    assert condition(stack["nginx"], "web") == "service_healthy"


def test_long_running_services_have_healthchecks(
    stack_bake: tuple[Path, dict[str, str]],
) -> None:
    project, _ = stack_bake
    for name, service in services(project).items():
        healthcheck = service.get("healthcheck")
        if name == "web":
            # The image's HEALTHCHECK; the compose file does not replace it.
            assert healthcheck is None
            assert dockerfile_instructions(project, "HEALTHCHECK")
        elif name in ("migrate", "beat"):
            assert healthcheck == {"disable": True}, name
        else:
            assert healthcheck["test"][0] in ("CMD", "CMD-SHELL"), name


def test_app_services_read_env_and_share_the_export_volume(
    stack_bake: tuple[Path, dict[str, str]],
) -> None:
    """Background exports (Celery) are written to a shared volume and sent by
    nginx; without them, nothing of that volume or directory remains."""
    project, answers = stack_bake
    celery = answers["use_celery"] == "y"
    stack = services(project)
    for name in app_services(answers):
        assert stack[name]["env_file"] == ".env", name
        volumes = stack[name].get("volumes", [])
        assert (f"exports:{EXPORT_DIR}" in volumes) == celery, name
    assert (f"exports:{EXPORT_DIR}:ro" in stack["nginx"]["volumes"]) == celery
    assert ("exports" in load(project, COMPOSE)["volumes"]) == celery
    # ...which is where nginx serves /_exports/ from and the app writes to.
    assert f"alias {EXPORT_DIR}/;" == EXPORTS
    assert (EXPORTS in shipped_text(project)) == celery
    dockerfile = (project / DOCKERFILE).read_text("utf-8")
    assert (f"EXPORT_DIR={EXPORT_DIR}" in dockerfile) == celery
    if not celery:
        words = (EXPORT_DIR, "EXPORT_DIR", "/_exports")
        leftovers = lines_matching(project, lambda line: any(w in line for w in words))
        assert leftovers == [], "\n".join(leftovers)


def test_nginx_runs_the_shipped_config_beside_web(
    stack_bake: tuple[Path, dict[str, str]],
) -> None:
    """nginx shares web's network namespace, so the shipped upstream
    (127.0.0.1:8000) is the app's port: no second copy of the config."""
    project, _ = stack_bake
    nginx = services(project)["nginx"]
    assert nginx["network_mode"] == "service:web"
    assert f"./{CONF.as_posix()}:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert f"./{SNIPPETS.as_posix()}:/etc/nginx/snippets:ro" in nginx["volumes"]
    assert "ports" not in nginx  # published on web, whose network it uses
    assert "127.0.0.1:8080:80" in services(project)["web"]["ports"]
    assert UPSTREAM == "server 127.0.0.1:8000;"
    assert UPSTREAM in shipped_text(project)
    assert "0.0.0.0:8000" in dockerfile_env(project)["GUNICORN_BIND"]
    dev_command = services(project, COMPOSE_DEV)["web"]["command"]
    assert dev_command[dev_command.index("--port") + 1] == "8000"
    assert dev_command[dev_command.index("--host") + 1] == "0.0.0.0"  # noqa: S104


def test_development_reloads_mounted_source(
    stack_bake: tuple[Path, dict[str, str]],
) -> None:
    project, answers = stack_bake
    dev = services(project, COMPOSE_DEV)
    web = dev["web"]
    assert "run" in web["command"]
    assert "--debug" in web["command"]  # reloader and debugger
    for name in app_services(answers):
        assert "./src:/app/src:ro" in dev[name]["volumes"], name
        assert dev[name]["environment"]["APP_ENV"] == "development", name
        assert dev[name]["environment"]["PYTHONPATH"] == "/app/src", name


def test_production_runs_the_image_without_mounts(
    stack_bake: tuple[Path, dict[str, str]],
) -> None:
    project, answers = stack_bake
    base, prod = services(project), services(project, COMPOSE_PROD)
    for name in app_services(answers):
        mounts = base[name].get("volumes", []) + prod.get(name, {}).get("volumes", [])
        assert not [m for m in mounts if m.startswith((".", "/"))], name
        assert prod[name]["environment"]["APP_ENV"] == "production", name
    # web keeps the image's command: gunicorn with the shipped config.
    assert "command" not in base["web"]
    assert "command" not in prod["web"]
    assert dockerfile_instructions(project, "CMD") == [
        '["gunicorn", "-c", "deploy/gunicorn.conf.py"]'
    ]
    # Only nginx, sharing web's network, reaches gunicorn.
    assert prod["web"]["environment"]["GUNICORN_BIND"] == "127.0.0.1:8000"


def test_tls_overlay_runs_the_tls_config_on_public_ports(
    stack_bake: tuple[Path, dict[str, str]],
) -> None:
    """deploy/compose.tls.yaml swaps nginx's main config for nginx-tls.conf
    (same mount point, so it replaces compose.yaml's), mounts the
    certificates where nginx-tls.conf reads them, and publishes 80 and 443
    for everyone; its healthcheck goes through HTTPS."""
    project, _ = stack_bake
    tls = services(project, COMPOSE_TLS)
    volumes = tls["nginx"]["volumes"]
    assert f"./{TLS_CONF.as_posix()}:/etc/nginx/nginx.conf:ro" in volumes
    assert "${TLS_CERT_DIR:-./deploy/tls}:/etc/nginx/tls:ro" in volumes
    conf = (project / TLS_CONF).read_text(encoding="utf-8")
    assert "ssl_certificate /etc/nginx/tls/fullchain.pem;" in conf
    assert "ssl_certificate_key /etc/nginx/tls/privkey.pem;" in conf
    assert tls["web"]["ports"] == ["80:80", "443:443"]
    assert "https://127.0.0.1/healthz" in tls["nginx"]["healthcheck"]["test"]
    assert "deploy/tls/" in (project / ".gitignore").read_text(encoding="utf-8")


# --- Dockerfile ----------------------------------------------------------------


def dockerfile_lines(project: Path) -> list[str]:
    """Instructions with continuation lines joined, comments dropped."""
    text = (project / DOCKERFILE).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return joined_instructions(lines)


def joined_instructions(lines: list[str]) -> list[str]:
    instructions: list[str] = []
    pending = ""
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].strip() + " "
            continue
        instructions.append(pending + stripped)
        pending = ""
    return instructions


def final_stage(project: Path) -> list[str]:
    lines = dockerfile_lines(project)
    last_from = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    return lines[last_from:]


def dockerfile_instructions(project: Path, keyword: str) -> list[str]:
    """Arguments of every ``keyword`` instruction of the final stage."""
    return [
        line[len(keyword) :].strip()
        for line in final_stage(project)
        if line.split()[0] == keyword
    ]


def dockerfile_env(project: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for arguments in dockerfile_instructions(project, "ENV"):
        for word in shlex.split(arguments):
            key, _, value = word.partition("=")
            env[key] = value
    return env


def test_dockerfile_builds_from_the_chosen_python(
    stack_bake: tuple[Path, dict[str, str]],
) -> None:
    project, _ = stack_bake
    lines = dockerfile_lines(project)
    python_version = (project / ".python-version").read_text("utf-8").strip()
    assert f"ARG PYTHON_VERSION={python_version}" in lines
    assert final_stage(project)[0] == "FROM python:${PYTHON_VERSION}-slim"
    assert "uv" not in " ".join(final_stage(project)).split()  # builder only


def test_dockerfile_runs_as_a_numeric_non_root_user(
    stack_bake: tuple[Path, dict[str, str]],
) -> None:
    project, _ = stack_bake
    users = dockerfile_instructions(project, "USER")
    assert users, "no USER: the container would run as root"
    user, _, group = users[-1].partition(":")
    assert user.isdigit(), users[-1]  # runAsNonRoot can check a number
    assert int(user) != 0
    assert not group or int(group) != 0


def test_dockerfile_commands_use_exec_form(
    stack_bake: tuple[Path, dict[str, str]],
) -> None:
    project, _ = stack_bake
    (cmd,) = dockerfile_instructions(project, "CMD")
    assert isinstance(json.loads(cmd), list)
    (healthcheck,) = dockerfile_instructions(project, "HEALTHCHECK")
    assert isinstance(json.loads(healthcheck.partition(" CMD ")[2]), list)
    assert not dockerfile_instructions(project, "ENTRYPOINT")


def test_dockerfile_names_the_release(stack_bake: tuple[Path, dict[str, str]]) -> None:
    project, _ = stack_bake
    assert "ARG GIT_SHA=unknown" in final_stage(project)
    env = dockerfile_env(project)
    assert env["APP_RELEASE"] == "${GIT_SHA}"
    assert env["SENTRY_RELEASE"] == "${GIT_SHA}"


@pytest.mark.parametrize("python_version", OPTIONS["python_version"])
def test_dockerfile_passes_hadolint(
    tmp_path: Path, cookiecutter_config: Path, python_version: str
) -> None:
    """The Dockerfile differs between bakes only by its Python version."""
    project = bake_into(tmp_path, cookiecutter_config, python_version=python_version)
    hadolint = Path(sys.executable).parent / "hadolint"
    result = run(
        [str(hadolint), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        cwd=project,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout
    assert result.stdout == "", result.stdout


# --- .dockerignore -------------------------------------------------------------


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus ``**``) as a regex."""
    pattern = pattern.strip("/")
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def ignored(rules: list[str], path: str) -> bool:
    """Whether Docker leaves ``path`` out of the build context: the last rule
    matching it or one of its parent directories decides."""
    parents = [
        str(Path(*Path(path).parts[: n + 1])) for n in range(len(Path(path).parts))
    ]
    decision = False
    for rule in rules:
        negated = rule.startswith("!")
        regex = pattern_regex(rule.removeprefix("!"))
        if any(regex.fullmatch(candidate) for candidate in parents):
            decision = not negated
    return decision


def dockerignore_rules(project: Path) -> list[str]:
    text = (project / ".dockerignore").read_text(encoding="utf-8")
    return [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    ]


def test_ignored_follows_docker_rules() -> None:
    rules = ["*", "!src/", "**/__pycache__"]
    assert ignored(rules, ".env")
    assert ignored(rules, "tests/test_x.py")
    assert not ignored(rules, "src/pkg/app.py")
    assert ignored(rules, "src/pkg/__pycache__/app.cpython-312.pyc")
    assert not ignored(["tests"], "src/tests.py")


def test_dockerignore_keeps_secrets_and_local_state_out(
    stack_bake: tuple[Path, dict[str, str]],
) -> None:
    project, _ = stack_bake
    rules = dockerignore_rules(project)
    package = next((project / "src").iterdir()).name
    for path in (
        ".env",
        ".env.production",
        ".git/config",
        ".venv/bin/python",
        "tests/conftest.py",
        "instance/development.db",
        "development.db",
        "requirements/requirements-dev.lock",
        f"src/{package}/__pycache__/wsgi.cpython-312.pyc",
        "compose.yaml",
    ):
        assert ignored(rules, path), f"{path} would be sent to the build"


def test_dockerignore_sends_everything_the_dockerfile_copies(
    stack_bake: tuple[Path, dict[str, str]],
) -> None:
    project, _ = stack_bake
    rules = dockerignore_rules(project)
    sources = [
        word
        for line in dockerfile_lines(project)
        if line.startswith("COPY ") and "--from=" not in line
        for word in shlex.split(line)[1:-1]
        if not word.startswith("--")
    ]
    assert "pyproject.toml" in sources
    for source in sources:
        files = [project / source]
        if files[0].is_dir():
            files = [p for p in files[0].rglob("*") if p.is_file()]
        assert files, source
        for file in files:
            relative = file.relative_to(project).as_posix()
            if "__pycache__" not in relative:
                assert not ignored(rules, relative), f"{relative} is ignored"

"""The commands and healthchecks the container files name work, run on the host.

No Docker engine runs here, so each string of compose.yaml and the
Dockerfile is run as a host process against the local services: the migrate
command against a fresh PostgreSQL database, the postgres and redis
healthchecks against the servers on 127.0.0.1, and the web, nginx and worker
healthchecks against gunicorn (the image's CMD), nginx with the shipped
config and a Celery worker (the worker service's command). Ports the
containers own (8000, 80) are swapped for free ones.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from prerequisites import require_nginx, require_python, require_service
from template_tools.environment import clean_env, production_env
from template_tools.nginx import free_port, render_for_prefix
from template_tools.process import Service, background, run
from template_tools.template import bake_into, defaults

pytestmark = pytest.mark.slow

DOCKERFILE = Path("deploy") / "docker" / "Dockerfile"
REDIS_URL = "redis://127.0.0.1:6379/0"
STARTUP_SECONDS = 60


@pytest.fixture(scope="module")
def project(
    tmp_path_factory: pytest.TempPathFactory,
    cookiecutter_config: Path,
    uv_cache_dir: Path,
) -> Path:
    """The PostgreSQL + Celery bake (every service), installed from its lock."""
    python = require_python(defaults()["python_version"])
    project = bake_into(
        tmp_path_factory.mktemp("commands"),
        cookiecutter_config,
        database="postgresql",
        use_celery="y",
    )
    env = clean_env(UV_CACHE_DIR=str(uv_cache_dir), UV_LINK_MODE="copy")
    result = run(["make", "install", f"PYTHON={python}"], project, env)
    assert result.returncode == 0, result.stdout
    return project


def compose_services(project: Path) -> dict[str, dict[str, Any]]:
    return yaml.safe_load((project / "compose.yaml").read_text("utf-8"))["services"]


def image_healthcheck(project: Path) -> list[str]:
    """The Dockerfile's ``HEALTHCHECK ... CMD [...]`` as a command line."""
    text = (project / DOCKERFILE).read_text(encoding="utf-8").replace("\\\n", " ")
    (line,) = [row for row in text.splitlines() if row.startswith("HEALTHCHECK ")]
    return json.loads(line.partition(" CMD ")[2])


def host_command(test: list[str]) -> list[str]:
    """A compose healthcheck ``test`` as the command Docker runs; ``$$`` is
    compose's escape for the ``$`` the container's shell sees."""
    kind, *rest = test
    if kind == "CMD":
        return rest
    assert kind == "CMD-SHELL", test
    (script,) = rest
    return ["sh", "-c", script.replace("$$", "$")]


def app_env(project: Path, database_url: str, **extra: str) -> dict[str, str]:
    """What compose gives the app containers, pointed at the host's services;
    the venv's bin first on PATH, as /opt/venv/bin is in the image."""
    venv_bin = project / ".venv" / "bin"
    return production_env(
        PATH=f"{venv_bin}{os.pathsep}{os.environ['PATH']}",
        DATABASE_URL=database_url,
        REDIS_URL=REDIS_URL,
        CELERY_KEY_PREFIX=f"commands-{uuid.uuid4().hex}:",
        INSTANCE_PATH=str(project / "instance"),
        **extra,
    )


def eventually(check: Callable[[], bool], service: Service) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            pytest.fail(f"exited with {service.process.returncode}:\n{service.tail()}")
        if check():
            return
        time.sleep(0.5)
    pytest.fail(f"not healthy after {STARTUP_SECONDS}s:\n{service.tail()}")


def succeeds(command: list[str], cwd: Path, env: dict[str, str] | None) -> bool:
    return run(command, cwd, env, timeout=60).returncode == 0


def migrate(project: Path, env: dict[str, str]) -> None:
    """The migrate service's command, as compose.yaml writes it."""
    command = compose_services(project)["migrate"]["command"]
    result = run(command, project, env, timeout=120)
    assert result.returncode == 0, f"{command}\n{result.stdout}"


def test_migrate_command_upgrades_an_empty_database(
    project: Path, postgres_url: str
) -> None:
    import psycopg

    migrate(project, app_env(project, postgres_url))

    with psycopg.connect(postgres_url) as connection:
        tables = {
            row[0]
            for row in connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
    assert {"alembic_version", "events", "jobs"} <= tables


def test_postgres_healthcheck_runs_against_the_server(project: Path) -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    test = compose_services(project)["postgres"]["healthcheck"]["test"]
    result = run(host_command(test), project, timeout=30)
    assert result.returncode == 0, result.stdout


def test_redis_healthcheck_runs_against_the_server(project: Path) -> None:
    require_service("Redis", "127.0.0.1", 6379)
    test = compose_services(project)["redis"]["healthcheck"]["test"]
    result = run(host_command(test), project, timeout=30)
    assert result.returncode == 0, result.stdout


def test_web_and_nginx_healthchecks_pass_on_the_image_command(
    project: Path, postgres_url: str, tmp_path: Path
) -> None:
    """gunicorn as the image's CMD runs it; the image's HEALTHCHECK and
    nginx's pass while it serves, and the image's fails once it stops."""
    require_service("Redis", "127.0.0.1", 6379)
    nginx = require_nginx()
    web_port, nginx_port = free_port(), free_port()
    env = app_env(
        project,
        postgres_url,
        GUNICORN_BIND=f"127.0.0.1:{web_port}",
        GUNICORN_WORKERS="1",
    )
    migrate(project, env)
    # nginx's workers run as `nobody`; pytest's tree is private (0700).
    prefix = Path(tempfile.mkdtemp(prefix="commands-nginx-"))
    prefix.chmod(0o755)
    conf = render_for_prefix(project, prefix, nginx_port, web_port, nginx)

    web_check = [
        part.replace("127.0.0.1:8000", f"127.0.0.1:{web_port}")
        for part in image_healthcheck(project)
    ]
    nginx_test = compose_services(project)["nginx"]["healthcheck"]["test"]
    nginx_check = [
        part.replace("http://127.0.0.1/", f"http://127.0.0.1:{nginx_port}/")
        for part in host_command(nginx_test)
    ]
    assert web_check != image_healthcheck(project), "the port 8000 was not found"
    assert nginx_check != host_command(nginx_test), "the nginx URL was not found"
    image_cmd = json.loads(
        next(
            line
            for line in (project / DOCKERFILE).read_text("utf-8").splitlines()
            if line.startswith("CMD ")
        ).removeprefix("CMD ")
    )
    try:
        with background("gunicorn", image_cmd, project, env, tmp_path) as web:
            eventually(lambda: succeeds(web_check, project, env), web)
            nginx_command = [nginx, "-p", str(prefix), "-c", str(conf)]
            with background(
                "nginx", [*nginx_command, "-g", "daemon off;"], prefix, env, tmp_path
            ) as proxy:
                eventually(lambda: succeeds(nginx_check, project, None), proxy)
        # gunicorn is gone: the image's healthcheck must say so.
        assert not succeeds(web_check, project, env)
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


def test_worker_healthcheck_pings_the_worker_service(
    project: Path, postgres_url: str, tmp_path: Path
) -> None:
    require_service("Redis", "127.0.0.1", 6379)
    worker = compose_services(project)["worker"]
    # In a container $HOSTNAME is the host name Celery puts in the node name.
    env = app_env(project, postgres_url, HOSTNAME=socket.gethostname())
    migrate(project, env)
    check = host_command(worker["healthcheck"]["test"])
    # Nothing answers yet: the check must fail.
    assert not succeeds(check, project, env)
    command = [*worker["command"], "--concurrency", "1"]
    with background("worker", command, project, env, tmp_path) as service:
        eventually(lambda: succeeds(check, project, env), service)

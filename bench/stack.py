"""What the benchmarks share: a baked and installed project, a throwaway
PostgreSQL database seeded with one account's events and a bearer token of
that account issued by the project's CLI (every ``/api`` route needs one),
and the real processes (gunicorn with the shipped
``deploy/gunicorn.conf.py``, nginx with the shipped ``deploy/nginx/nginx.conf``
rendered for local ports and paths).

Baking, process handling, the throwaway database, the app's production
environment and the nginx rendering are the template tests' own
(``template_tools``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from template_tools.environment import clean_env, find_python, production_env
from template_tools.nginx import find_nginx, free_port, render_for_prefix
from template_tools.postgres import throwaway_database
from template_tools.process import Service, start, wait_for
from template_tools.template import (
    REPO_ROOT,
    bake_into,
    defaults,
    write_cookiecutter_config,
)

BENCH = REPO_ROOT / "bench"
RESULTS = BENCH / "results"

POSTGRES_SERVER = os.environ.get(
    "BENCH_POSTGRES_SERVER", "postgresql://postgres@127.0.0.1:5432"
)
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
HOST = "127.0.0.1"
# The account whose events the benchmarks seed and read.
ACCOUNT = "bench"
# The app's per-token and failed-auth request limits: a load generator sends
# tens of thousands of requests a minute with one token from one address,
# and would measure the limits' 429s. Generous values, so the limits are
# still counted but never refuse; BENCH_APP_ENV ("KEY=VALUE KEY=VALUE")
# overrides or adds any app setting of a run.
RATE_LIMIT_ENV = {
    "RATELIMIT_PER_TOKEN": "1000000/minute",
    "RATELIMIT_FAILED_AUTH": "1000000/minute",
}


def run(command: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=True, text=True, **options)  # noqa: S603


@dataclass
class Project:
    path: Path
    package: str

    @property
    def python(self) -> Path:
        return self.path / ".venv" / "bin" / "python"

    def bin(self, name: str) -> str:
        return str(self.path / ".venv" / "bin" / name)


def bake_and_install(workdir: Path) -> Project:
    """The template baked with its defaults, installed into its own venv."""
    project = bake_into(workdir, write_cookiecutter_config(workdir / "cookiecutter"))
    package = next(p.name for p in (project / "src").iterdir() if p.is_dir())
    venv = project / ".venv"
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or "uv"
    env = {**os.environ, "UV_CACHE_DIR": str(REPO_ROOT / ".cache" / "uv")}
    interpreter = find_python(defaults()["python_version"]) or sys.executable
    run([uv, "venv", "-q", "--python", interpreter, str(venv)], env=env)
    python = venv / "bin" / "python"
    run(
        [uv, "pip", "install", "-q", "--python", str(python), "-e", str(project)],
        env=env,
    )
    return Project(project, package)


@contextlib.contextmanager
def project_from(existing: str | None) -> Iterator[Project]:
    """``existing`` (a baked project with its .venv, for quick reruns), or a
    fresh default bake in a temporary directory."""
    if existing:
        path = Path(existing).resolve()
        package = next(p.name for p in (path / "src").iterdir() if p.is_dir())
        yield Project(path, package)
        return
    with tempfile.TemporaryDirectory(prefix="bench-bake-") as tmp:
        yield bake_and_install(Path(tmp))


@contextlib.contextmanager
def workspace(existing: str | None, name: str) -> Iterator[tuple[Project, Path, str]]:
    """Everything one benchmark run needs: the project (``project_from``), a
    scratch directory and a fresh PostgreSQL database, all gone afterwards."""
    with (
        project_from(existing) as project,
        tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp,
        throwaway_database(POSTGRES_SERVER, "bench") as database_url,
    ):
        yield project, Path(tmp), database_url


def app_env(workdir: Path, database_url: str, **extra: str) -> dict[str, str]:
    """Production settings, as deploy/README.md runs the app."""
    settings = {
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS_URL,
        "CELERY_KEY_PREFIX": f"bench-{uuid.uuid4().hex[:8]}:",
        "INSTANCE_PATH": str(workdir / "instance"),
        "LOG_LEVEL": "WARNING",
        **RATE_LIMIT_ENV,
    }
    overrides = dict(
        item.split("=", 1) for item in os.environ.get("BENCH_APP_ENV", "").split()
    )
    return production_env(**{**settings, **extra, **overrides})


def flask(project: Project, env: dict[str, str], *args: str) -> str:
    """``flask --app <package>.wsgi ARGS`` in the project; returns its stdout
    (stderr is passed through)."""
    command = [project.bin("flask"), "--app", f"{project.package}.wsgi", *args]
    return run(command, cwd=project.path, env=env, stdout=subprocess.PIPE).stdout


@dataclass(frozen=True)
class Caller:
    """An account of the benchmark's database and a read-write token of it."""

    account: str
    owner_id: int
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def header_lines(self) -> str:
        """The headers as raw HTTP/1 lines, for ``http_stream``/``http_get``."""
        return "".join(f"{name}: {value}\r\n" for name, value in self.headers.items())


def create_account(project: Project, env: dict[str, str], account: str) -> int:
    """``flask accounts create ACCOUNT --exist-ok``; returns the id it prints."""
    output = flask(project, env, "accounts", "create", account, "--exist-ok")
    found = re.search(r"\(id (\d+)\)", output)
    if found is None:
        raise RuntimeError(f"no account id in {output!r}")
    return int(found.group(1))


def issue_token(project: Project, env: dict[str, str], account: str) -> str:
    """A read-write token of ``account`` from ``flask tokens issue``, which
    prints it alone on the last line of its stdout."""
    output = flask(
        project,
        env,
        *("tokens", "issue", account, "--name", "bench"),
        *("--scope", "read", "--scope", "write"),
    )
    return output.strip().splitlines()[-1]


def migrate_and_authorize(
    project: Project, env: dict[str, str], account: str = ACCOUNT
) -> Caller:
    """Bring the database to the latest migration, create ``account`` and
    issue it a token, with the project's CLI."""
    flask(project, env, "db", "upgrade")
    owner_id = create_account(project, env, account)
    return Caller(account, owner_id, issue_token(project, env, account))


def migrate_and_seed(
    project: Project, env: dict[str, str], rows: int, account: str = ACCOUNT
) -> Caller:
    """``migrate_and_authorize``, and ``rows`` events of ``account``, the
    same rows on every run (``--seed 1``)."""
    caller = migrate_and_authorize(project, env, account)
    seed = ("seed", "--rows", str(rows), "--seed", "1", "--account", account)
    flask(project, env, *seed)
    return caller


def answers(port: int, path: str = "/healthz") -> bool:
    try:
        return http_get(port, path, timeout=2)[0] == 200
    except OSError:
        return False


class Stack:
    """gunicorn and nginx processes of one benchmark, stopped together."""

    def __init__(self, project: Project, workdir: Path) -> None:
        self.project = project
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.services: list[Service] = []

    def gunicorn(self, name: str, env: dict[str, str], port: int) -> Service:
        """gunicorn -c deploy/gunicorn.conf.py, settings from ``env``
        (``GUNICORN_*``), bound to ``port``; returns once /healthz answers."""
        command = [self.project.bin("gunicorn"), "-c", "deploy/gunicorn.conf.py"]
        service = start(
            name,
            command,
            self.project.path,
            {**env, "GUNICORN_BIND": f"{HOST}:{port}"},
            self.logs,
        )
        self.services.append(service)
        self.wait(service, port)
        return service

    def nginx(
        self,
        name: str,
        upstream_port: int,
        swaps: dict[str, str] | None = None,
    ) -> tuple[int, Path]:
        """nginx with the shipped config rendered for a private prefix (made
        world-searchable: nginx's workers read files as another user), with
        ``swaps`` replacing lines of it; returns its port and prefix."""
        binary = find_nginx()
        if binary is None:
            raise SystemExit("nginx is not installed: run make system-packages")
        prefix = self.workdir / name
        prefix.mkdir(parents=True, exist_ok=True)
        for directory in (self.workdir, prefix):
            directory.chmod(0o755)
        port = free_port()
        conf = render_for_prefix(
            self.project.path, prefix, port, upstream_port, binary, swaps=swaps
        )
        command = [binary, "-p", str(prefix), "-c", str(conf), "-g", "daemon off;"]
        service = start(name, command, prefix, clean_env(), self.logs)
        self.services.append(service)
        wait_for(lambda: port_open(port) or self.check(service), 30, name)
        return port, prefix

    def wait(self, service: Service, port: int) -> None:
        wait_for(lambda: answers(port) or self.check(service), 60, service.name)

    @staticmethod
    def check(service: Service) -> bool:
        if service.process.poll() is not None:
            raise RuntimeError(f"{service.name} exited\n{service.tail()}")
        return False

    def stop(self, service: Service) -> None:
        service.stop()
        self.services.remove(service)

    def close(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.services.clear()


# The /api/ location minus its rate and connection limits, for load from
# one client address (it would measure the limiter).
WITHOUT_RATE_LIMIT = {
    "location /api/ {\n"
    "    limit_req zone=api_rate burst=40 nodelay;\n"
    "    limit_conn api_conn 20;\n": "location /api/ {\n",
}


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def http_stream(
    port: int, path: str, timeout: float = 600, headers: str = ""
) -> Iterator[bytes]:
    """The body of an HTTP/1.0 GET, as raw socket reads: no chunked coding
    and no client library between the server and the byte counter;
    ``headers`` are raw header lines (``Caller.header_lines``). Raises
    unless the status is 200."""
    with socket.create_connection((HOST, port), timeout=timeout) as client:
        client.sendall(f"GET {path} HTTP/1.0\r\nHost: {HOST}\r\n{headers}\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            data = client.recv(65536)
            if not data:
                raise RuntimeError(f"GET {path}: connection closed in the headers")
            head += data
        head, _, body = head.partition(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        if status != b"200":
            raise RuntimeError(f"GET {path}: {head.decode()}\n{body[:500]!r}")
        if body:
            yield body
        while data := client.recv(262144):
            yield data


def http_get(
    port: int, path: str, timeout: float = 60, headers: str = ""
) -> tuple[int, bytes]:
    """Status and body of a small GET (HTTP/1.0, one connection); ``headers``
    are raw header lines, as ``Caller.header_lines`` writes them."""
    with socket.create_connection((HOST, port), timeout=timeout) as client:
        client.sendall(f"GET {path} HTTP/1.0\r\nHost: {HOST}\r\n{headers}\r\n".encode())
        response = b""
        while data := client.recv(65536):
            response += data
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii")
    return [int(child) for child in text.split()]


def status_kib(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` memory figure (VmHWM, VmRSS) in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


def summary(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "rounds": values}


def write_result(name: str, result: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return path


def print_table(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")

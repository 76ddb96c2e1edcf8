"""What deploy/gunicorn.conf.py needs code for: its settings, the CPU limit,
the metrics directory, gunicorn's JSON log lines and the server hooks.

The config file loads this module by its path, without importing the
package: the app must not be imported in gunicorn's master, where it would
pick prometheus_client's storage before the metrics directory is set and
import database drivers before a gevent worker patches the standard
library. So this module imports nothing of the package at its top; the
hooks that run in a worker, once the app is loaded, import what they use.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from gunicorn.glogging import Logger
from pydantic import BeforeValidator, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pythonjsonlogger.json import JsonFormatter

PACKAGE = "{{ cookiecutter.package_name }}"
PREFIX = "GUNICORN_"

CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_CFS_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_CFS_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
SHARED_MEMORY = Path("/dev/shm")  # noqa: S108 - tmpfs for worker heartbeats

# prometheus_client's own variable: the directory where every worker writes
# its metrics, so /metrics adds up all of them (deploy/README.md, Metrics).
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# Marks a directory metrics_dir() made, so on_exit removes only that one.
PRIVATE_METRICS_DIR_VARIABLE = PREFIX + "PRIVATE_METRICS_DIR"

# Variables earlier versions read, and what to do instead.
RETIRED_VARIABLES = {
    PREFIX + "GEVENT_PATCHED_DB": "psycopg 3 cooperates with gevent by itself; "
    "remove it",
    PREFIX + "ACCESS_LOG": "nginx writes the access log, one JSON line per "
    "request with its request id (deploy/nginx); remove it",
}
# The app's JSON log fields (logs.py), for gunicorn's own messages.
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
JSON_RENAMES = {"asctime": "time", "levelname": "level", "name": "logger"}


class GunicornConfigError(RuntimeError):
    """The environment asks for a setting this deployment cannot run with."""


def words(value: Any) -> Any:
    """``a, b c`` as ``["a", "b", "c"]``."""
    return value.replace(",", " ").split() if isinstance(value, str) else value


def lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


class GunicornSettings(BaseSettings):
    """gunicorn's settings, each from its ``GUNICORN_`` variable. The
    defaults suit one container behind nginx on the same host."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        case_sensitive=False,
        env_ignore_empty=True,
        str_strip_whitespace=True,
    )

    wsgi_app: str = f"{PACKAGE}.wsgi:app"
    proc_name: str = PACKAGE
    bind: Annotated[list[str], NoDecode, BeforeValidator(words)] = ["127.0.0.1:8000"]
    worker_class: Annotated[
        Literal["gthread", "sync", "gevent"], BeforeValidator(lower)
    ] = "gthread"
    # Unset: default_workers() of the CPU limit, at most max_workers.
    workers: int | None = Field(None, ge=1)
    max_workers: int = Field(8, ge=1)
    # Unset: 4 for gthread, 1 for the others.
    threads: int | None = Field(None, ge=1)
    worker_connections: int = Field(1000, ge=1)
    gevent_max_blocking_seconds: float = Field(0.2, ge=0, allow_inf_nan=False)
    timeout: int = Field(30, ge=0)
    graceful_timeout: int = Field(30, ge=0)
    keepalive: int = Field(75, ge=0)
    max_requests: int = Field(10000, ge=0)
    max_requests_jitter: int = Field(2500, ge=0)
    # Unset: /dev/shm when it exists.
    worker_tmp_dir: str | None = None
    preload_app: bool = False
    forwarded_allow_ips: str = "127.0.0.1"
    control_socket: str | None = None
    error_log: str = "-"
    log_level: Annotated[str, BeforeValidator(lower)] = "info"
    # gunicorn's own (extra command-line flags), and metrics_dir()'s mark.
    cmd_args: str | None = None
    private_metrics_dir: str | None = None
{%- if cookiecutter.database == "postgresql" %}
    # Not gunicorn's: gevent is refused unless this names PostgreSQL.
    database_url: str = Field("", validation_alias="DATABASE_URL")
{%- endif %}

    @model_validator(mode="after")
    def refuse_what_runs_badly(self) -> GunicornSettings:
        """gevent needs PostgreSQL: psycopg 3 (>= 3.1.14) waits on the
        database through gevent, so a query waiting in PostgreSQL lets the
        worker serve others. SQLite's calls run in C and hold the loop;
        worse, a greenlet waiting for SQLite's write lock holds it while the
        greenlet that owns the lock cannot run to release it. gevent must
        patch before the app is imported, so not with ``preload_app``
        (gevent's MonkeyPatchWarning says so). Threads are
        for gthread: gunicorn silently turns a sync worker with more threads
        into gthread."""
        if self.worker_class == "gevent" and self.preload_app:
            raise ValueError(
                f"{PREFIX}PRELOAD_APP=1 cannot run with {PREFIX}WORKER_CLASS=gevent: "
                "the master would import the app before each worker patches the "
                "standard library, leaving what the import made (locks, sockets, "
                "ssl) blocking the loop. Turn one of them off."
            )
        if self.worker_class == "gevent"{% if cookiecutter.database == "postgresql" %} and not is_postgresql(self.database_url){% endif %}:
            raise ValueError(
                f"{PREFIX}WORKER_CLASS=gevent needs DATABASE_URL to name a "
                "PostgreSQL server: SQLite calls block every request of a "
                "gevent worker. {% if cookiecutter.database == 'postgresql' %}Set DATABASE_URL, or use gthread.{% else %}This project runs on SQLite: use gthread.{% endif %}"
            )
        if self.threads is None:
            self.threads = 4 if self.worker_class == "gthread" else 1
        elif self.threads != 1 and self.worker_class != "gthread":
            raise ValueError(
                f"{PREFIX}THREADS applies to the gthread worker class only, "
                f"not {self.worker_class}"
            )
        return self

    @classmethod
    def load(cls) -> GunicornSettings:
        """The settings from the environment, or GunicornConfigError naming
        the variable."""
        check_variables(os.environ)
        try:
            return cls()
        except ValidationError as exc:
            error = exc.errors()[0]
            where = "".join(f"{PREFIX}{part}".upper() for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            got = f" (got {error['input']!r})" if where else ""
            raise GunicornConfigError(f"{where}: {message}{got}".lstrip(": ")) from None
{%- if cookiecutter.database == "postgresql" %}


def is_postgresql(database_url: str) -> bool:
    return database_url.startswith(("postgres://", "postgresql://", "postgresql+"))
{%- endif %}


def check_variables(environ: Mapping[str, str]) -> None:
    """Refuse unknown ``GUNICORN_`` variables: a typo such as
    ``GUNICORN_WORKER=4`` would otherwise be ignored without a word."""
    for name, advice in RETIRED_VARIABLES.items():
        if name in environ:
            raise GunicornConfigError(f"{name} is no longer read: {advice}")
    known = {PREFIX + field.upper() for field in GunicornSettings.model_fields}
    known.discard(PREFIX + "DATABASE_URL")
    unknown = sorted(
        name for name in environ if name.startswith(PREFIX) and name not in known
    )
    if unknown:
        raise GunicornConfigError(
            f"unknown variable {', '.join(unknown)}; this config reads "
            f"{', '.join(sorted(known))}"
        )


# Workers and CPUs -------------------------------------------------------------


def read_text(path: Path) -> str | None:
    """The file's stripped text, or None when it cannot be read."""
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None


def cgroup_v2_quota(cpu_max: Path) -> float | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` ("200000 100000" is 2.0);
    None when there is no file or no limit ("max 100000")."""
    text = read_text(cpu_max)
    if not text:
        return None
    quota, _, period = text.partition(" ")
    try:
        return int(quota) / int(period or "100000")
    except (ValueError, ZeroDivisionError):
        return None  # "max": unlimited


def cgroup_v1_quota(cfs_quota: Path, cfs_period: Path) -> float | None:
    """CPUs allowed by cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``;
    None when either file is missing or the quota is -1 (unlimited)."""
    quota_text, period_text = read_text(cfs_quota), read_text(cfs_period)
    if not quota_text or not period_text:
        return None
    try:
        quota, period = int(quota_text), int(period_text)
    except ValueError:
        return None
    if quota <= 0 or period <= 0:
        return None
    return quota / period


def schedulable_cpus() -> int:
    """CPUs this process may be scheduled on. ``os.cpu_count()`` counts the
    host's CPUs even when a cpuset pins the container to a few; the affinity
    mask does not. (Platforms without one, such as macOS, fall back.)"""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_limit(
    cpu_max: Path = CGROUP_V2_CPU_MAX,
    cfs_quota: Path = CGROUP_V1_CFS_QUOTA,
    cfs_period: Path = CGROUP_V1_CFS_PERIOD,
    available: int | None = None,
) -> int:
    """Whole CPUs the container may use: its cgroup CPU quota (v2, else v1)
    rounded up, never more than the CPUs it may be scheduled on
    (``available``, default the affinity mask). Without a quota, all of them.

    A container limited to 1 CPU on a 64-core host must not start 129
    workers, each with its own database pool.
    """
    if available is None:
        available = schedulable_cpus()
    quota = cgroup_v2_quota(cpu_max)
    if quota is None:
        quota = cgroup_v1_quota(cfs_quota, cfs_period)
    if quota is None:
        return max(1, available)
    return max(1, min(available, math.ceil(quota)))


def default_workers(cpus: int, maximum: int) -> int:
    """Gunicorn's rule of thumb, 2 x CPUs + 1, capped at ``maximum``: every
    worker holds its own database pool, and the database's connection limit
    is shared by every replica."""
    return max(1, min(2 * cpus + 1, maximum))


def worker_count(settings: GunicornSettings) -> int:
    """``GUNICORN_WORKERS`` when set, else ``default_workers`` of the CPU
    limit capped at ``GUNICORN_MAX_WORKERS``."""
    return settings.workers or default_workers(cpu_limit(), settings.max_workers)


def heartbeat_dir(
    settings: GunicornSettings, shared: Path = SHARED_MEMORY
) -> str | None:
    """``GUNICORN_WORKER_TMP_DIR``, else /dev/shm when it exists.

    Workers touch a heartbeat file every second; on a disk-backed or
    overlay filesystem that can block a worker long enough to be killed.
    """
    return settings.worker_tmp_dir or (str(shared) if shared.is_dir() else None)


# Metrics of every worker --------------------------------------------------------


def metrics_dir(shared_memory: Path = SHARED_MEMORY) -> str:
    """The directory where every worker writes its metrics.

    Without one, each worker would count alone and /metrics would show
    whichever worker answered the scrape. When PROMETHEUS_MULTIPROC_DIR is
    unset, this gunicorn gets a private directory (on tmpfs where there is
    one, named after the master's pid so two gunicorns never share it),
    removed again by on_exit.
    """
    configured = os.environ.get(METRICS_DIR_VARIABLE)
    if configured:
        return configured
    base = shared_memory if shared_memory.is_dir() else Path(tempfile.gettempdir())
    private = str(base / f"{PACKAGE}-metrics-{os.getpid()}")
    os.environ[METRICS_DIR_VARIABLE] = private
    os.environ[PRIVATE_METRICS_DIR_VARIABLE] = private
    return private


def reset_metrics_dir(path: Path) -> None:
    """Create the metrics directory, or empty it of an earlier run's files:
    those processes are gone and their counts must not carry over."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()


# Logging ------------------------------------------------------------------------


class JsonLogger(Logger):
    """gunicorn's own messages (workers booting, timeouts) as JSON lines with
    the app's fields (logs.py). There is no access log here: nginx writes
    one line per request, with its request id, including the requests it
    answers itself."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        formatter = JsonFormatter(JSON_FIELDS, rename_fields=JSON_RENAMES)
        for handler in self.error_log.handlers:
            handler.setFormatter(formatter)


# Server hooks ---------------------------------------------------------------------


def on_starting(server: Any) -> None:
    """Say once how many workers of which kind start, and why that many;
    start the metrics directory afresh."""
    server.log.info(
        "%s: %d %s worker(s) x %d thread(s), CPU limit %d",
        server.cfg.proc_name,
        server.cfg.workers,
        server.cfg.worker_class_str,
        server.cfg.threads,
        cpu_limit(),
    )
    directory = os.environ[METRICS_DIR_VARIABLE]
    reset_metrics_dir(Path(directory))
    server.log.info("metrics of all workers in %s", directory)


def dispose_engines(flask_app: Any) -> int:
    """Drop the SQLAlchemy pools a forked worker inherited from the master.

    ``close=False``: the sockets belong to the master's copies too, and
    closing them here would end its sessions on the server. Each worker
    then opens its own connections. Returns how many engines were reset.
    """
    sqlalchemy = getattr(flask_app, "extensions", {}).get("sqlalchemy")
    if sqlalchemy is None:
        return 0
    with flask_app.app_context():
        engines = list(sqlalchemy.engines.values())
    for engine in engines:
        engine.dispose(close=False)
    return len(engines)


def post_fork(server: Any, worker: Any) -> None:
    """With ``preload_app`` the app (and any pool it opened) was built in the
    master before forking; give this worker pools of its own."""
    if server.cfg.preload_app:
        count = dispose_engines(server.app.wsgi())
        server.log.debug("worker %s reset %d database engine(s)", worker.pid, count)


def post_worker_init(worker: Any) -> None:
    """The app is loaded{% if cookiecutter.database == "postgresql" %}, gevent has patched the standard library{% endif %} and no
    request has come in: start tracing this worker (tracing.py; off
    without OTEL_EXPORTER_OTLP_ENDPOINT){% if cookiecutter.database == "postgresql" %}, and under gevent watch for
    greenlets that hold the loop{% endif %}."""
    from {{ cookiecutter.package_name }}.tracing import init_tracing

    init_tracing(worker.wsgi, "web")
{%- if cookiecutter.database == "postgresql" %}
    seconds = GunicornSettings().gevent_max_blocking_seconds
    if worker.cfg.worker_class_str == "gevent" and seconds > 0:
        from {{ cookiecutter.package_name }}.loop_monitor import watch_event_loop

        watch_event_loop(seconds)
        worker.log.info(
            "worker %s logs greenlets that block the loop for over %gs",
            worker.pid,
            seconds,
        )
{%- endif %}


def worker_exit(server: Any, worker: Any) -> None:
    """Send this worker's last spans before it exits."""
    from {{ cookiecutter.package_name }}.tracing import shutdown_tracing

    shutdown_tracing()


def child_exit(server: Any, worker: Any) -> None:
    """A worker exited (recycled, killed or crashed): drop its share of the
    live gauges, such as requests in progress. Its counters stay in the
    directory, so totals never go back when a worker is replaced."""
    # Imported here: prometheus_client picks its storage when first
    # imported, which must come after metrics_dir() has run.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    """Remove the metrics directory this gunicorn made for itself."""
    private = os.environ.get(PRIVATE_METRICS_DIR_VARIABLE)
    if private and private == os.environ.get(METRICS_DIR_VARIABLE):
        shutil.rmtree(private, ignore_errors=True)

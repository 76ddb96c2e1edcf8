"""Gunicorn settings for production, each overridable by a ``GUNICORN_`` variable.

    gunicorn -c deploy/gunicorn.conf.py

Gunicorn reads the module-level names below that match its settings
(``bind``, ``workers``...) and ignores the rest. Every value comes from the
environment with a default meant for one container behind nginx on the same
host (deploy/nginx/nginx.conf); deploy/README.md lists the variables.
Command-line flags and ``GUNICORN_CMD_ARGS`` still override this file.

Values that would break the deployment quietly (gevent on SQLite, threads
on sync workers, a misspelt variable) stop gunicorn with a message naming
the variable.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gunicorn.glogging import Logger, SafeAtoms

PACKAGE = "{{ cookiecutter.package_name }}"
PREFIX = "GUNICORN_"

CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_CFS_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_CFS_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")
SHARED_MEMORY = Path("/dev/shm")  # noqa: S108 - tmpfs for worker heartbeats

WORKER_CLASSES = ("gthread", "sync", "gevent")
DEFAULT_BIND = "127.0.0.1:8000"
DEFAULT_MAX_WORKERS = 8
DEFAULT_THREADS = 4
# A greenlet that keeps the gevent loop longer than this stalls every other
# request of its worker; the loop monitor logs it (deploy/README.md).
DEFAULT_GEVENT_MAX_BLOCKING_SECONDS = 0.2
# nginx's proxy_read_timeout is this plus a margin, and its upstream
# keepalive_timeout (60s) is below DEFAULT_KEEPALIVE, so nginx closes idle
# upstream connections before gunicorn does. The template's tests check both.
DEFAULT_TIMEOUT = 30
DEFAULT_GRACEFUL_TIMEOUT = 30
DEFAULT_KEEPALIVE = 75
# prometheus_client's own variable: the directory where every worker writes
# its metrics, so /metrics adds up all of them (deploy/README.md, Metrics).
METRICS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
# Marks a directory metrics_dir() made, so on_exit removes only that one.
PRIVATE_METRICS_DIR_VARIABLE = "GUNICORN_PRIVATE_METRICS_DIR"

# Every variable this file reads; any other GUNICORN_ name is a mistake.
# GUNICORN_CMD_ARGS is gunicorn's own (extra command-line flags).
KNOWN_VARIABLES = frozenset(
    PREFIX + name
    for name in (
        "ACCESS_LOG",
        "BIND",
        "CMD_ARGS",
        "CONTROL_SOCKET",
        "ERROR_LOG",
        "FORWARDED_ALLOW_IPS",
        "GEVENT_MAX_BLOCKING_SECONDS",
        "GRACEFUL_TIMEOUT",
        "KEEPALIVE",
        "LOG_LEVEL",
        "MAX_REQUESTS",
        "MAX_REQUESTS_JITTER",
        "MAX_WORKERS",
        "PRELOAD_APP",
        "PRIVATE_METRICS_DIR",
        "PROC_NAME",
        "THREADS",
        "TIMEOUT",
        "WORKER_CLASS",
        "WORKER_CONNECTIONS",
        "WORKER_TMP_DIR",
        "WORKERS",
        "WSGI_APP",
    )
)

# Variables earlier versions read, and what to do instead.
RETIRED_VARIABLES = {
    PREFIX + "GEVENT_PATCHED_DB": "psycopg 3 cooperates with gevent by itself; "
    "remove it",
}

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


class GunicornConfigError(RuntimeError):
    """The environment asks for a setting this deployment cannot run with."""


def check_variables(environ: Mapping[str, str]) -> None:
    """Refuse unknown ``GUNICORN_`` variables: a typo such as
    ``GUNICORN_WORKER=4`` would otherwise be ignored without a word."""
    for name, advice in RETIRED_VARIABLES.items():
        if name in environ:
            raise GunicornConfigError(f"{name} is no longer read: {advice}")
    unknown = sorted(
        name
        for name in environ
        if name.startswith(PREFIX) and name not in KNOWN_VARIABLES
    )
    if unknown:
        known = ", ".join(sorted(KNOWN_VARIABLES))
        raise GunicornConfigError(
            f"unknown variable {', '.join(unknown)}; this config reads {known}"
        )


def env_str(name: str, default: str) -> str:
    """``GUNICORN_<name>``, stripped; ``default`` when unset or blank."""
    value = os.environ.get(PREFIX + name, "").strip()
    return value or default


def env_int(name: str, default: int, minimum: int = 0) -> int:
    """``GUNICORN_<name>`` as an integer of at least ``minimum``."""
    raw = env_str(name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise GunicornConfigError(
            f"{PREFIX}{name} must be an integer, got {raw!r}"
        ) from None
    if value < minimum:
        raise GunicornConfigError(f"{PREFIX}{name} must be >= {minimum}, got {value}")
    return value


def env_seconds(name: str, default: float) -> float:
    """``GUNICORN_<name>`` as a number of seconds, at least 0."""
    raw = env_str(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or math.isinf(value):
        raise GunicornConfigError(
            f"{PREFIX}{name} must be a number of seconds >= 0, got {raw!r}"
        )
    return value


def env_bool(name: str, default: bool) -> bool:
    """``GUNICORN_<name>`` as a yes/no flag (1/0, true/false, yes/no, on/off)."""
    raw = env_str(name, "").lower()
    if not raw:
        return default
    if raw in TRUE_WORDS:
        return True
    if raw in FALSE_WORDS:
        return False
    raise GunicornConfigError(f"{PREFIX}{name} must be 1 or 0, got {raw!r}")


def env_list(name: str, default: str) -> list[str]:
    """``GUNICORN_<name>`` split on commas and whitespace."""
    return env_str(name, default).replace(",", " ").split()


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


def default_workers(cpus: int, maximum: int = DEFAULT_MAX_WORKERS) -> int:
    """Gunicorn's rule of thumb, 2 x CPUs + 1, capped at ``maximum``: every
    worker holds its own database pool, and the database's connection limit
    is shared by every replica."""
    return max(1, min(2 * cpus + 1, maximum))


def worker_count() -> int:
    """``GUNICORN_WORKERS`` when set, else ``default_workers`` of the CPU limit
    capped at ``GUNICORN_MAX_WORKERS``."""
    maximum = env_int("MAX_WORKERS", DEFAULT_MAX_WORKERS, minimum=1)
    return env_int("WORKERS", default_workers(cpu_limit(), maximum), minimum=1)


def chosen_worker_class() -> str:
    """``GUNICORN_WORKER_CLASS``: gthread (default), sync or gevent.

    gevent needs PostgreSQL: psycopg 3 (>= 3.1.14) waits on the database
    through gevent, so a query waiting in PostgreSQL lets the worker serve
    others. SQLite's calls run in C and hold the loop; worse, a greenlet
    waiting for SQLite's write lock holds it while the greenlet that owns
    the lock cannot run to release it.
    """
    name = env_str("WORKER_CLASS", "gthread").lower()
    if name not in WORKER_CLASSES:
        raise GunicornConfigError(
            f"{PREFIX}WORKER_CLASS must be one of {', '.join(WORKER_CLASSES)}, "
            f"got {name!r}"
        )
{%- if cookiecutter.database == "postgresql" %}
    if name == "gevent" and not is_postgresql(os.environ.get("DATABASE_URL", "")):
        raise GunicornConfigError(
            f"{PREFIX}WORKER_CLASS=gevent needs DATABASE_URL to name a PostgreSQL "
            "server: SQLite calls block every request of a gevent worker. "
            "Set DATABASE_URL, or use gthread."
        )
{%- else %}
    if name == "gevent":
        raise GunicornConfigError(
            f"{PREFIX}WORKER_CLASS=gevent needs DATABASE_URL to name a PostgreSQL "
            "server, and this project runs on SQLite, whose calls block every "
            "request of a gevent worker: use gthread."
        )
{%- endif %}
    return name
{%- if cookiecutter.database == "postgresql" %}


def is_postgresql(database_url: str) -> bool:
    return database_url.startswith(("postgres://", "postgresql://", "postgresql+"))
{%- endif %}


def thread_count(worker_class_name: str) -> int:
    """Threads per worker: ``GUNICORN_THREADS`` (default 4) for gthread.

    Others get 1: gunicorn silently turns a sync worker with more threads
    into gthread, so asking for that is refused instead.
    """
    if worker_class_name == "gthread":
        return env_int("THREADS", DEFAULT_THREADS, minimum=1)
    threads = env_int("THREADS", 1, minimum=1)
    if threads != 1:
        raise GunicornConfigError(
            f"{PREFIX}THREADS applies to the gthread worker class only, "
            f"not {worker_class_name}"
        )
    return 1


def heartbeat_dir(shared_memory: Path = SHARED_MEMORY) -> str | None:
    """``GUNICORN_WORKER_TMP_DIR``, else /dev/shm when it exists.

    Workers touch a heartbeat file every second; on a disk-backed or
    overlay filesystem that can block a worker long enough to be killed.
    """
    default = str(shared_memory) if shared_memory.is_dir() else ""
    return env_str("WORKER_TMP_DIR", default) or None


def optional_log(name: str, default: str) -> str | None:
    """A log destination: ``-`` is the standard stream, ``off`` none."""
    value = env_str(name, default)
    return None if value.lower() == "off" else value


class JsonSafeAtoms(SafeAtoms):
    """Access-log values escaped for a JSON string, so a path or user agent
    carrying quotes, backslashes or newlines (``%0A`` in a URL) cannot break
    the line or forge another one. Missing values still read ``-``."""

    def __init__(self, atoms: Mapping[str, Any]) -> None:
        dict.__init__(
            self,
            {
                key: json.dumps(value)[1:-1] if isinstance(value, str) else value
                for key, value in atoms.items()
            },
        )


class JsonAccessLogger(Logger):
    """Gunicorn's logger with JSON-safe access-log values, ``%(t)s`` in
    ISO 8601 UTC and ``%(M)s`` in milliseconds with microsecond precision."""

    atoms_wrapper_class = JsonSafeAtoms

    def now(self) -> str:
        return datetime.now(UTC).isoformat(timespec="milliseconds")

    def atoms(
        self, resp: Any, req: Any, environ: Mapping[str, Any], request_time: timedelta
    ) -> dict[str, Any]:
        atoms: dict[str, Any] = super().atoms(resp, req, environ, request_time)
        atoms["M"] = round(request_time / timedelta(milliseconds=1), 3)
        if atoms.get("B") is None:
            atoms["B"] = 0
        return atoms


def post_worker_init(worker: Any) -> None:
    """The app is loaded{% if cookiecutter.database == "postgresql" %}, gevent has patched the standard library{% endif %} and no
    request has come in: start tracing this worker (tracing.py; off
    without OTEL_EXPORTER_OTLP_ENDPOINT){% if cookiecutter.database == "postgresql" %}, and under gevent watch for
    greenlets that hold the loop{% endif %}."""
    from {{ cookiecutter.package_name }}.tracing import init_tracing

    init_tracing(worker.wsgi, "web")
{%- if cookiecutter.database == "postgresql" %}
    if worker.cfg.worker_class_str == "gevent" and gevent_max_blocking_seconds > 0:
        from {{ cookiecutter.package_name }}.loop_monitor import watch_event_loop

        watch_event_loop(gevent_max_blocking_seconds)
        worker.log.info(
            "worker %s logs greenlets that block the loop for over %gs",
            worker.pid,
            gevent_max_blocking_seconds,
        )
{%- endif %}


def worker_exit(server: Any, worker: Any) -> None:
    """Send this worker's last spans before it exits."""
    from {{ cookiecutter.package_name }}.tracing import shutdown_tracing

    shutdown_tracing()


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


def reset_metrics_dir(path: Path) -> None:
    """Create the metrics directory, or empty it of an earlier run's files:
    those processes are gone and their counts must not carry over."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()


def child_exit(server: Any, worker: Any) -> None:
    """A worker exited (recycled, killed or crashed): drop its share of the
    live gauges, such as requests in progress. Its counters stay in the
    directory, so totals never go back when a worker is replaced."""
    # Imported here, not at the top: prometheus_client picks its storage when
    # first imported, which must come after metrics_dir() has run.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


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


def on_exit(server: Any) -> None:
    """Remove the metrics directory this gunicorn made for itself."""
    private = os.environ.get(PRIVATE_METRICS_DIR_VARIABLE)
    if private and private == os.environ.get(METRICS_DIR_VARIABLE):
        shutil.rmtree(private, ignore_errors=True)


check_variables(os.environ)

# Gunicorn settings. --------------------------------------------------------

wsgi_app = env_str("WSGI_APP", f"{PACKAGE}.wsgi:app")
proc_name = env_str("PROC_NAME", PACKAGE)

# Loopback unless told otherwise: nginx on the same host is the only client.
# (Gunicorn's own default switches to all interfaces when PORT is set; this
# file ignores PORT.)
bind = env_list("BIND", DEFAULT_BIND)  # host:port or unix:/path, comma-separated

worker_class = chosen_worker_class()
workers = worker_count()
threads = thread_count(worker_class)
worker_connections = env_int("WORKER_CONNECTIONS", 1000, minimum=1)
# Not a gunicorn setting; post_worker_init reads it. 0 turns the monitor off.
gevent_max_blocking_seconds = env_seconds(
    "GEVENT_MAX_BLOCKING_SECONDS", DEFAULT_GEVENT_MAX_BLOCKING_SECONDS
)

# nginx refuses oversized requests first, as problem+json
# (deploy/nginx/snippets/http.conf: large_client_header_buffers 4 4k, a
# request line or header line of at most 4 KiB, a whole header of at most
# 16 KiB, so at most 5462 fields of 3 bytes). gunicorn's limits sit above
# anything nginx passes on, so its own HTML 400 never reaches a client.
limit_request_line = 8190  # gunicorn's largest
limit_request_field_size = 8190
limit_request_fields = 6000

timeout = env_int("TIMEOUT", DEFAULT_TIMEOUT)
graceful_timeout = env_int("GRACEFUL_TIMEOUT", DEFAULT_GRACEFUL_TIMEOUT)
keepalive = env_int("KEEPALIVE", DEFAULT_KEEPALIVE)

# Recycle workers now and then to bound slow leaks. A worker is away while
# its replacement boots, so rarely (at 1000 requests, busy workers were
# replaced every few seconds and throughput dropped to nothing while they
# all rebooted) and with a wide jitter, so workers started together are not
# replaced together.
max_requests = env_int("MAX_REQUESTS", 10000)
max_requests_jitter = env_int("MAX_REQUESTS_JITTER", 2500)

worker_tmp_dir = heartbeat_dir()
metrics_directory = metrics_dir()  # not a gunicorn setting; sets the variable
preload_app = env_bool("PRELOAD_APP", default=False)

# Trust X-Forwarded-Proto from nginx on this host only, and no other
# scheme header (nginx clears X-Forwarded-Ssl and X-Forwarded-Protocol).
forwarded_allow_ips = env_str("FORWARDED_ALLOW_IPS", "127.0.0.1")
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}

# Gunicorn >= 25.1 opens a control socket (for gunicornc) under
# $XDG_RUNTIME_DIR or ~/.gunicorn by default. Off unless a path is given.
control_socket_disable = not env_str("CONTROL_SOCKET", "")
if not control_socket_disable:
    control_socket = env_str("CONTROL_SOCKET", "")

# One JSON object per line on stdout; gunicorn's own messages on stderr.
logger_class = JsonAccessLogger
accesslog = optional_log("ACCESS_LOG", "-")
errorlog = optional_log("ERROR_LOG", "-")
loglevel = env_str("LOG_LEVEL", "info").lower()
access_log_format = (
    '{"time": "%(t)s", "remote_addr": "%(h)s", "method": "%(m)s", '
    '"path": "%(U)s", "status": %(s)s, "bytes": %(B)s, "duration_ms": %(M)s, '
    '"request_id": "%({x-request-id}o)s", "user_agent": "%(a)s"}'
)

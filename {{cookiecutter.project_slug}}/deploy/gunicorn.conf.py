"""Gunicorn settings for production: ``gunicorn -c deploy/gunicorn.conf.py``.

Gunicorn reads the module-level names below that match its settings and
ignores the rest. Each value comes from a ``GUNICORN_`` variable, read and
checked by ``GunicornSettings`` in the package's serving.py, which also holds
the code (CPU limit, metrics directory, hooks); deploy/README.md lists the
variables. A misspelt variable or a combination that would run badly stops
gunicorn with a message naming the variable. Command-line flags and
``GUNICORN_CMD_ARGS`` still override this file.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PACKAGE = "{{ cookiecutter.package_name }}"


def load_serving() -> ModuleType:
    """The package's serving.py, loaded by its path: importing the package
    would import the app into the master (see serving.py)."""
    package = importlib.util.find_spec(PACKAGE)
    if package is None or not package.submodule_search_locations:
        raise RuntimeError(f"{PACKAGE} is not installed")
    path = Path(package.submodule_search_locations[0]) / "serving.py"
    spec = importlib.util.spec_from_file_location(f"{PACKAGE}_serving", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


serving = load_serving()
env = serving.GunicornSettings.load()

wsgi_app = env.wsgi_app  # <package>.wsgi:app
proc_name = env.proc_name  # the package name, in process lists

# Loopback: nginx on the same host is the only client. (Gunicorn's own
# default switches to all interfaces when PORT is set; this file ignores it.)
bind = env.bind

# gthread by default; gevent only on PostgreSQL (deploy/README.md, Choosing a
# worker class). 2 x CPUs + 1 workers, the CPUs of the container's cgroup
# quota rather than the host's, at most GUNICORN_MAX_WORKERS (8): each
# worker holds its own database pool.
worker_class = env.worker_class
workers = serving.worker_count(env)
threads = env.threads  # 4 for gthread; 1 for the others
worker_connections = env.worker_connections

# nginx refuses oversized requests first, as problem+json
# (deploy/nginx/snippets/http.conf: large_client_header_buffers 4 4k, a
# request line or header line of at most 4 KiB, a whole header of at most
# 16 KiB, so at most 5462 fields of 3 bytes). gunicorn's limits sit above
# anything nginx passes on, so its own HTML 400 never reaches a client.
limit_request_line = 8190  # gunicorn's largest
limit_request_field_size = 8190
limit_request_fields = 6000

# A silent worker is killed after 30 s; nginx's proxy_read_timeout (35 s)
# waits longer, so even a late answer reaches the client. Workers get 30 s
# to finish requests on a stop; compose's stop grace period is longer.
timeout = env.timeout
graceful_timeout = env.graceful_timeout
# Above nginx's upstream keepalive_timeout (60 s): nginx closes an idle
# connection first and never reuses one gunicorn is closing.
keepalive = env.keepalive

# Recycle workers now and then to bound slow leaks. A worker is away while
# its replacement boots, so rarely (at 1000 requests, busy workers were
# replaced every few seconds and throughput dropped to nothing while they
# all rebooted) and with a wide jitter, so workers started together are not
# replaced together.
max_requests = env.max_requests
max_requests_jitter = env.max_requests_jitter

# Heartbeat files on tmpfs (/dev/shm): a slow disk cannot get workers killed.
worker_tmp_dir = serving.heartbeat_dir(env)
# Built once per worker; GUNICORN_PRELOAD_APP=1 builds it in the master
# (less memory, slower reloads) and post_fork resets inherited pools.
preload_app = env.preload_app

# Trust X-Forwarded-Proto from nginx on this host only, and no other
# scheme header (nginx clears X-Forwarded-Ssl and X-Forwarded-Protocol).
forwarded_allow_ips = env.forwarded_allow_ips
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}

# Gunicorn >= 25.1 opens a control socket (for gunicornc) under
# $XDG_RUNTIME_DIR or ~/.gunicorn by default. Off unless a path is given.
control_socket_disable = env.control_socket is None
if env.control_socket is not None:
    control_socket = env.control_socket

# gunicorn's own messages as JSON lines on stderr, in the app's format. No
# access log: nginx writes one line per request, with its request id.
logger_class = serving.JsonLogger
accesslog = None
errorlog = None if env.error_log.lower() == "off" else env.error_log
loglevel = env.log_level

# Every worker writes its metrics to one directory, so /metrics adds them up
# (a private one on tmpfs unless PROMETHEUS_MULTIPROC_DIR is set). Set
# before any worker imports the app; not a gunicorn setting.
metrics_directory = serving.metrics_dir()

# Server hooks (serving.py).
on_starting = serving.on_starting
post_fork = serving.post_fork
post_worker_init = serving.post_worker_init
worker_exit = serving.worker_exit
child_exit = serving.child_exit
on_exit = serving.on_exit

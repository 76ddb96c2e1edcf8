"""Benchmark: an I/O-bound request through nginx -> gunicorn, gevent worker
against the shipped gthread default, the same number of processes, same run.

``GET /bench/wait`` (bench/io_app.py: the project's app plus a route that
runs ``SELECT pg_sleep(0.05)`` and answers a small JSON body) at 200
concurrent connections (wrk), each configuration behind its own nginx with
the shipped config, under ``gunicorn -c deploy/gunicorn.conf.py`` with
``GUNICORN_WORKERS`` processes (default 1) and production settings:

- ``gthread``: the shipped default, 4 threads per process, shipped pool
  (``DATABASE_POOL_SIZE`` 5 + ``DATABASE_MAX_OVERFLOW`` 5);
- ``gevent``: ``GUNICORN_WORKER_CLASS=gevent``, same shipped pool;
- ``gevent, pool N``: the same with ``DATABASE_POOL_SIZE=N``
  (``--gevent-pool``, default 40), ``DATABASE_MAX_OVERFLOW=0``.

Each request holds a worker (thread or greenlet) and a pool connection for
at least 50 ms, so a gthread process serves at most threads / 0.05 s
requests a second however idle its CPU; a gevent process is bounded by its
database pool and then by CPU. Rounds alternate between configurations
(each started afresh, so idle pools do not pile up connections on the
server); medians are kept, with p99 latency and errors (non-2xx responses
and socket errors, wrk's timeout raised to gunicorn's 30 s so a slow answer
counts as slow, not as an error). Worker recycling is off
(``GUNICORN_MAX_REQUESTS=0``), as in json_get.py.

    .venv/bin/python bench/io_bound.py [--connections 200] [--workers 1]
        [--rounds 3] [--duration 10] [--gevent-pool 40] [--project PATH]

Needs wrk. Writes bench/results/io_bound.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

from stack import (
    BENCH,
    HOST,
    Stack,
    app_env,
    flask,
    free_port,
    http_get,
    print_table,
    workspace,
    write_result,
)

PATH = "/bench/wait"
WAIT_SECONDS = 0.05
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def milliseconds(value: str) -> float:
    """wrk's ``2.51s`` / ``412.33ms`` / ``950.00us`` in milliseconds."""
    found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if found is None:
        raise ValueError(f"not a wrk duration: {value!r}")
    return float(found.group(1)) * UNITS[found.group(2)]


def wrk(port: int, seconds: float, connections: int) -> dict[str, Any]:
    command = [
        *("wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s"),
        *("--timeout", "30s", "--latency", f"http://{HOST}:{port}{PATH}"),
    ]
    output = subprocess.run(  # noqa: S603
        command, check=True, text=True, stdout=subprocess.PIPE
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in", output)
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", output, re.MULTILINE))
    if rate is None or total is None or "99" not in latency:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
        output,
    )
    socket_errors = sum(map(int, sockets.groups())) if sockets else 0
    return {
        "requests_per_second": float(rate.group(1)),
        "requests": int(total.group(1)),
        "p50_ms": milliseconds(latency["50"]),
        "p99_ms": milliseconds(latency["99"]),
        "errors": (int(non_2xx.group(1)) if non_2xx else 0) + socket_errors,
    }


def drain(port: int, seconds: float = 60) -> None:
    """Wait until a request is answered at once again. When wrk stops, nginx
    closes its upstream connections, but requests a gthread worker already
    accepted stay queued and are still run: without this, the next round
    would start behind them."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        http_get(port, PATH)
        if time.monotonic() - started < 4 * WAIT_SECONDS:
            return
    raise RuntimeError(f"port {port} still busy after {seconds}s")


def configurations(workers: int, gevent_pool: int) -> dict[str, dict[str, str]]:
    """Name -> environment additions of each side."""
    same = {"GUNICORN_WORKERS": str(workers)}
    return {
        "gthread": same,
        "gevent": {**same, "GUNICORN_WORKER_CLASS": "gevent"},
        f"gevent, pool {gevent_pool}": {
            **same,
            "GUNICORN_WORKER_CLASS": "gevent",
            "DATABASE_POOL_SIZE": str(gevent_pool),
            "DATABASE_MAX_OVERFLOW": "0",
        },
    }


def measure(
    stack: Stack, name: str, env: dict[str, str], args: argparse.Namespace
) -> dict[str, Any]:
    """Start this configuration's gunicorn and nginx, check the answer,
    warm up, run one round, stop both."""
    upstream = free_port()
    tag = re.sub(r"\W+", "-", name)
    stack.gunicorn(f"gunicorn-{tag}", env, upstream)
    port, _ = stack.nginx(f"nginx-{tag}", upstream)
    try:
        status, body = http_get(port, PATH)
        if status != 200 or b"waited" not in body:
            raise RuntimeError(f"{name}: {status} {body[:200]!r}")
        wrk(port, 2, args.connections)  # every connection and pool slot open
        drain(port)
        return wrk(port, args.duration, args.connections)
    finally:
        stack.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--gevent-pool", type=int, default=40)
    parser.add_argument("--project", help="a baked project with its .venv")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")

    load_before = os.getloadavg()
    sides = configurations(args.workers, args.gevent_pool)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    with workspace(args.project, "io") as (project, workdir, database_url):
        base = app_env(
            workdir,
            database_url,
            GUNICORN_MAX_REQUESTS="0",
            GUNICORN_WSGI_APP="io_app:app",
            PYTHONPATH=str(BENCH),
            BENCH_PACKAGE=project.package,
            BENCH_WAIT_SECONDS=str(WAIT_SECONDS),
        )
        flask(project, base, "db", "upgrade")
        stack = Stack(project, workdir)
        try:
            for _ in range(args.rounds):
                for name, extra in sides.items():
                    runs[name].append(measure(stack, name, {**base, **extra}, args))
        finally:
            stack.close()

    result: dict[str, Any] = {
        "path": PATH,
        "wait_seconds": WAIT_SECONDS,
        "connections": args.connections,
        "workers": args.workers,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "load_generator": "wrk -t2 --timeout 30s",
        "gunicorn_changes": "GUNICORN_MAX_REQUESTS=0 (no worker recycling)",
        "nginx_changes": "none",
        "sides": {
            name: {
                "environment": sides[name],
                **{
                    key: statistics.median(run[key] for run in values)
                    for key in ("requests_per_second", "p50_ms", "p99_ms")
                },
                "errors": sum(run["errors"] for run in values),
                "requests": sum(run["requests"] for run in values),
                "rounds": values,
            }
            for name, values in runs.items()
        },
        "load_average": {"before": load_before, "after": os.getloadavg()},
    }
    out = write_result("io_bound", result)
    report(result)
    print(f"\n(written to {out.relative_to(BENCH.parent)})")
    return 0


def report(result: dict[str, Any]) -> None:
    print(
        f"### `GET {result['path']}` (pg_sleep {result['wait_seconds']:g} s) via "
        f"nginx -> gunicorn, {result['workers']} process(es), "
        f"{result['connections']} connections, median of {result['rounds']} x "
        f"{result['duration_s']:g} s rounds\n"
    )
    print_table(
        ("worker class", "requests/s", "p50 ms", "p99 ms", "errors / requests"),
        [
            (
                name,
                f"{side['requests_per_second']:,.0f}",
                f"{side['p50_ms']:,.0f}",
                f"{side['p99_ms']:,.0f}",
                f"{side['errors']} / {side['requests']:,}",
            )
            for name, side in result["sides"].items()
        ],
    )


if __name__ == "__main__":
    sys.exit(main())

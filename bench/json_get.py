"""Benchmark: a JSON GET through nginx -> gunicorn with the whole app,
against a bare Flask app doing the same database work, in the same run.

``GET /api/events?limit=N`` (default 50 of 10,000 rows seeded for one
account, PostgreSQL) with that account's bearer token (issued by
``flask tokens issue`` after seeding; every request sends it), served by
the project's app (``create_app``: token authentication, request ids,
security headers, ProxyFix, validation, problem handlers, JSON provider)
and by ``bench/bare_app.py`` (a plain ``Flask(__name__)`` calling the same
``services.list_events(owner_id, limit=N)`` for the same account, its id
from ``BENCH_OWNER_ID``, and writing the same JSON bytes, which is
checked; it reads no token). Both run under the same
``gunicorn -c deploy/gunicorn.conf.py`` (the baseline via
``GUNICORN_WSGI_APP``), each behind its own nginx with the same rendered
config, and both get the same requests, token header included. The ratio
is what authentication and the app's own layers cost: per request, one
indexed SELECT of the token by its SHA-256 digest, plus at most one
``last_used_at`` UPDATE per token per minute.
Worker recycling (``max_requests``) is off for both (``GUNICORN_MAX_REQUESTS=0``)
so that no worker's reboot lands in a random round.
Target: app/bare >= 0.85 (requests/s).

The shipped nginx config rate-limits ``/api/`` per client address
(``limit_req`` 20 r/s burst 40, ``limit_conn`` 20). The benchmark renders
it without those two lines (and changes nothing else), since a load
generator on one address would otherwise measure the limiter. For the same
reason the app's own per-token limits, if it has them, are raised far past
the load (``stack.RATE_LIMIT_ENV``), not turned off.

Load: ``wrk`` (``apt-get install wrk``) when installed, else a threaded
Python client. Rounds alternate between the apps; medians are kept.

    .venv/bin/python bench/json_get.py [--rows 10000] [--limit 50]
        [--rounds 5] [--duration 10] [--connections 16] [--project PATH]

Writes bench/results/json_get.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from typing import Any

from stack import (
    BENCH,
    HOST,
    WITHOUT_RATE_LIMIT,
    Stack,
    app_env,
    free_port,
    http_get,
    migrate_and_seed,
    print_table,
    summary,
    workspace,
    write_result,
)

TARGET = 0.85


def wrk(
    port: int, path: str, seconds: float, connections: int, headers: dict[str, str]
) -> dict[str, Any]:
    command = ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    command.append(f"http://{HOST}:{port}{path}")
    output = subprocess.run(  # noqa: S603
        command, check=True, text=True, stdout=subprocess.PIPE
    ).stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    found = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
        output,
    )
    connect, read, write, timeouts = map(int, found.groups()) if found else (0,) * 4
    if non_2xx or connect or read or write or timeouts:
        raise RuntimeError(f"errors under load:\n{output}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if rate is None:
        raise RuntimeError(f"unexpected wrk output:\n{output}")
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", output, re.MULTILINE))
    return {
        "requests_per_second": float(rate.group(1)),
        "p50": latency.get("50"),
        "p99": latency.get("99"),
    }


def python_load(
    port: int, path: str, seconds: float, connections: int, headers: dict[str, str]
) -> dict[str, Any]:
    """Keep-alive connections in threads, for machines without wrk."""
    deadline = time.monotonic() + seconds
    counts = [0] * connections
    failures: list[str] = []

    def client(index: int) -> None:
        connection = http.client.HTTPConnection(HOST, port, timeout=30)
        while time.monotonic() < deadline:
            connection.request("GET", path, headers=headers)
            answer = connection.getresponse()
            answer.read()
            if answer.status != 200:
                failures.append(str(answer.status))
                return
            counts[index] += 1
        connection.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"statuses under load: {failures[:5]}")
    return {
        "requests_per_second": sum(counts) / (time.monotonic() - started),
        "p50": None,
        "p99": None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--limit", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--project", help="a baked project with its .venv")
    args = parser.parse_args()
    load = wrk if shutil.which("wrk") else python_load
    path = f"/api/events?limit={args.limit}"

    # The machine's load (1, 5, 15 min) before and after: the figures of a
    # run on a busy shared machine are comparable only with each other.
    load_before = os.getloadavg()
    result: dict[str, Any] = {
        "path": path,
        "rows": args.rows,
        "rounds": args.rounds,
        "duration_s": args.duration,
        "connections": args.connections,
        "load_generator": load.__name__,
        "nginx_changes": "removed limit_req and limit_conn from location /api/",
        "gunicorn_changes": "GUNICORN_MAX_REQUESTS=0 (no worker recycling)",
        "auth": "bearer token on every request; the app verifies it, the bare"
        " app ignores it",
    }
    with workspace(args.project, "json") as (project, workdir, database_url):
        # Worker recycling off for both apps (celery_tasks.py turns off pool
        # recycling likewise), so no worker's reboot lands in a random round.
        env = app_env(workdir, database_url, GUNICORN_MAX_REQUESTS="0")
        caller = migrate_and_seed(project, env, args.rows)
        bare_env = {
            **env,
            "GUNICORN_WSGI_APP": "bare_app:app",
            "PYTHONPATH": str(BENCH),
            "BENCH_PACKAGE": project.package,
            "BENCH_OWNER_ID": str(caller.owner_id),
            # The yardstick is never traced, whatever BENCH_APP_ENV turns on.
            "OTEL_SDK_DISABLED": "true",
        }
        stack = Stack(project, workdir)
        try:
            ports: dict[str, int] = {}
            for name, settings in (("app", env), ("bare", bare_env)):
                upstream = free_port()
                stack.gunicorn(f"gunicorn-{name}", settings, upstream)
                ports[name], _ = stack.nginx(
                    f"nginx-{name}", upstream, WITHOUT_RATE_LIMIT
                )
            anonymous = http_get(ports["app"], path)
            if anonymous[0] != 401:
                raise RuntimeError(f"the app answers without a token: {anonymous}")
            bodies = {
                name: http_get(port, path, headers=caller.header_lines)
                for name, port in ports.items()
            }
            if bodies["app"] != bodies["bare"] or bodies["app"][0] != 200:
                raise RuntimeError(f"the two apps answer differently: {bodies}")
            result["response_bytes"] = len(bodies["app"][1])
            for port in ports.values():  # warm every worker and connection
                load(port, path, 2, args.connections, caller.headers)
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in ports}
            for _ in range(args.rounds):
                for name, port in ports.items():
                    runs[name].append(
                        load(
                            port, path, args.duration, args.connections, caller.headers
                        )
                    )
        finally:
            stack.close()

    for name, values in runs.items():
        result[name] = summary([run["requests_per_second"] for run in values])
        result[name]["latency"] = [(run["p50"], run["p99"]) for run in values]
    result["ratio"] = result["app"]["median"] / result["bare"]["median"]
    result["load_average"] = {"before": load_before, "after": os.getloadavg()}
    result["target"] = TARGET
    out = write_result("json_get", result)
    report(result)
    print(f"\n(written to {out.relative_to(BENCH.parent)})")
    return 0


def report(result: dict[str, Any]) -> None:
    print(
        f"### `GET {result['path']}` via nginx -> gunicorn "
        f"({result['load_generator']}, {result['connections']} connections, "
        f"median of {result['rounds']} x {result['duration_s']:g} s rounds)\n"
    )
    print_table(
        ("WSGI app (same gunicorn config, same nginx config)", "requests/s"),
        [
            (
                "bare `Flask(__name__)`, same query and JSON bytes, no auth",
                f"{result['bare']['median']:,.0f}",
            ),
            (
                "project app, bearer-token auth and full middleware stack",
                f"{result['app']['median']:,.0f}",
            ),
            (f"ratio (target >= {TARGET})", f"{result['ratio']:.2f}"),
        ],
    )
    print(
        "\nnginx: the shipped config with `limit_req`/`limit_conn` removed from"
        " `location /api/` (nothing else changed); gunicorn: shipped config with"
        " `GUNICORN_MAX_REQUESTS=0`; both get the same token header, which only"
        " the app checks; "
        f"{result['response_bytes']} bytes per response, identical for both."
    )


if __name__ == "__main__":
    sys.exit(main())

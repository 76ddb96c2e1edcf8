"""Benchmark: streaming CSV/NDJSON exports, against baselines in the same run.

All N rows (default 1,000,000) belong to one account, seeded with
``flask seed --account``; the HTTP requests carry its bearer token (issued
by ``flask tokens issue``) and every export is of that account's events.

1. COPY path: ``GET /api/events/export.csv`` of N rows
   through nginx -> gunicorn (shipped configs, one gthread worker) on
   PostgreSQL, against ``psql -c "\\copy (<the app's query>) to stdout"``
   on the same database (the query as the app runs it, owner filter
   included), and against ``psql -c "\\copy events to stdout"``, the raw
   table with no formatting at all (the account owns every row). All byte
   streams go through the same counting loop; every round checks the row
   count, and one round checks that the app's output and psql's of its query
   are byte for byte the same. Target: ratio >= 0.6 against each.
2. Portable path: the app's export generators (``csv_chunks``,
   ``ndjson_chunks``) called in-process on SQLite (and on PostgreSQL, where
   CSV is the COPY path) against a plain loop over the account's ORM
   objects from ``yield_per`` written row by row with ``csv.writer``/``json.dumps``,
   which must produce the same bytes. Target: ratio >= 1.5.
3. Memory: peak RSS (VmHWM) growth of the gunicorn worker over one export
   of about 100k rows and one of N rows, a fresh gunicorn for each.
   Target: growth < 25 MB.

Rounds alternate between the app and its baseline; medians are kept.

    .venv/bin/python bench/export_csv.py [--rows 1000000] [--rounds 3]
        [--portable sqlite,postgresql] [--project PATH]

``--project`` reuses a baked project that has its .venv (quick reruns).
Writes bench/results/export_csv.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import psycopg

from stack import (
    BENCH,
    Caller,
    Project,
    Stack,
    app_env,
    children,
    free_port,
    http_stream,
    migrate_and_seed,
    print_table,
    run,
    status_kib,
    summary,
    workspace,
    write_result,
)

COPY_TARGET = 0.6
PORTABLE_TARGET = 1.5
RSS_TARGET_MB = 25
SMALL_EXPORT_ROWS = 100_000
RUNNER = str(BENCH / "export_runner.py")


def count(chunks: Iterator[bytes]) -> tuple[int, int]:
    """Bytes and lines of a stream: the one consumer of both sides."""
    size = lines = 0
    for chunk in chunks:
        size += len(chunk)
        lines += chunk.count(b"\n")
    return size, lines


def digest(chunks: Iterator[bytes]) -> str:
    hasher = hashlib.sha256()
    for chunk in chunks:
        hasher.update(chunk)
    return hasher.hexdigest()


def psql_stream(database_url: str, query: str) -> Iterator[bytes]:
    """``query`` (in parentheses) or a table name, copied out by psql."""
    command = [
        "psql",
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        database_url,
        "-c",
        f"\\copy {query} to stdout with (format csv, header, null '\\N')",
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE) as psql:  # noqa: S603
        assert psql.stdout is not None  # noqa: S101 - stdout=PIPE
        while data := psql.stdout.read1(262144):
            yield data
    if psql.returncode != 0:
        raise RuntimeError(f"psql exited with {psql.returncode}")


def runner(project: Project, env: dict[str, str], *args: str) -> dict[str, Any]:
    command = [str(project.python), RUNNER, project.package, *args]
    output = run(command, cwd=project.path, env=env, stdout=subprocess.PIPE).stdout
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result


def copy_rounds(
    port: int, caller: Caller, database_url: str, query: str, rows: int, rounds: int
) -> dict[str, Any]:
    """The app's CSV through nginx against psql's \\copy of its query and of
    the raw table, alternating."""
    path = "/api/events/export.csv"
    headers = caller.header_lines
    app_digest = digest(http_stream(port, path, headers=headers))
    psql_digest = digest(psql_stream(database_url, f"({query})"))
    if app_digest != psql_digest:
        raise RuntimeError("the app's CSV differs from psql's \\copy of its query")
    timings: dict[str, list[float]] = {"app": [], "psql": [], "psql_table": []}
    sizes: dict[str, int] = {}
    for _ in range(rounds):
        for kind, stream in (
            ("app", lambda: http_stream(port, path, headers=headers)),
            ("psql", lambda: psql_stream(database_url, f"({query})")),
            ("psql_table", lambda: psql_stream(database_url, "events")),
        ):
            started = time.perf_counter()
            size, lines = count(stream())
            timings[kind].append(time.perf_counter() - started)
            if lines != rows + 1:
                raise RuntimeError(f"{kind}: {lines - 1} rows, expected {rows}")
            sizes[kind] = size
    result: dict[str, Any] = {"sha256": app_digest, "bytes": sizes["app"]}
    for kind, values in timings.items():
        result[kind] = summary(values)
        result[kind]["rows_per_second"] = rows / result[kind]["median"]
    result["ratio"] = result["psql"]["median"] / result["app"]["median"]
    result["ratio_table"] = result["psql_table"]["median"] / result["app"]["median"]
    return result


def since_for(database_url: str, owner_id: int, rows: int) -> str:
    """A ``since`` filter that selects ``owner_id``'s newest ``rows`` events."""
    with psycopg.connect(database_url) as connection:
        found = connection.execute(
            "SELECT created_at FROM events WHERE owner_id = %s"
            " ORDER BY created_at DESC, id DESC OFFSET %s LIMIT 1",
            (owner_id, rows - 1),
        ).fetchone()
    if found is None:
        return "2000-01-01T00:00:00+00:00"
    return str(found[0].isoformat())


def rss_growth(
    stack: Stack,
    env: dict[str, str],
    caller: Caller,
    fmt: str,
    query: str,
    expected_rows: int,
) -> dict[str, Any]:
    """Peak RSS growth of a fresh single gunicorn worker over one export,
    after a warm-up (a request and an empty export) has loaded the code."""
    port = free_port()
    service = stack.gunicorn("gunicorn-rss", env, port)
    try:
        (worker,) = children(service.process.pid)
        path = f"/api/events/export.{fmt}"
        headers = caller.header_lines
        count(http_stream(port, f"{path}?kind=nothing-matches", headers=headers))
        before = status_kib(worker, "VmHWM")
        size, lines = count(http_stream(port, path + query, headers=headers))
        after = status_kib(worker, "VmHWM")
    finally:
        stack.stop(service)
    header = 1 if fmt == "csv" else 0
    if lines - header < expected_rows:
        raise RuntimeError(f"{path}: {lines - header} rows, expected {expected_rows}")
    return {
        "rows": lines - header,
        "bytes": size,
        "hwm_before_kib": before,
        "hwm_after_kib": after,
        "growth_mb": (after - before) / 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--portable", default="sqlite,postgresql")
    parser.add_argument("--project", help="a baked project with its .venv")
    args = parser.parse_args()
    portable_on = [name for name in args.portable.split(",") if name]

    result: dict[str, Any] = {"rows": args.rows, "rounds": args.rounds}
    with workspace(args.project, "export") as (project, workdir, database_url):
        env = app_env(workdir, database_url, GUNICORN_WORKERS="1")
        caller = migrate_and_seed(project, env, args.rows)
        query = runner(project, env, "copy-sql", str(caller.owner_id))["sql"]

        stack = Stack(project, workdir)
        try:
            gunicorn_port = free_port()
            stack.gunicorn("gunicorn", env, gunicorn_port)
            port, _ = stack.nginx("nginx", gunicorn_port)
            result["copy"] = copy_rounds(
                port, caller, database_url, query, args.rows, args.rounds
            )
            stack.close()
            # Memory: the worker behind the same kind of stack, no nginx
            # needed (it does not change what the worker holds).
            since = quote(since_for(database_url, caller.owner_id, SMALL_EXPORT_ROWS))
            small_rows = min(SMALL_EXPORT_ROWS, args.rows)
            result["rss"] = {
                f"{fmt}_{label}": rss_growth(stack, env, caller, fmt, suffix, expected)
                for fmt in ("csv", "ndjson")
                for label, suffix, expected in (
                    ("small", f"?since={since}", small_rows),
                    ("full", "", args.rows),
                )
            }
        finally:
            stack.close()

        result["portable"] = {}
        if "postgresql" in portable_on:
            result["portable"]["postgresql"] = runner(
                project, env, "portable", str(args.rounds), str(caller.owner_id)
            )
        if "sqlite" in portable_on:
            sqlite_env = {
                **env,
                "DATABASE_URL": f"sqlite:///{workdir / 'export.db'}",
            }
            sqlite_caller = migrate_and_seed(project, sqlite_env, args.rows)
            result["portable"]["sqlite"] = runner(
                project,
                sqlite_env,
                "portable",
                str(args.rounds),
                str(sqlite_caller.owner_id),
            )

    result["targets"] = {
        "copy_ratio": COPY_TARGET,
        "portable_ratio": PORTABLE_TARGET,
        "rss_growth_mb": RSS_TARGET_MB,
    }
    out = write_result("export_csv", result)
    report(result)
    print(f"\n(written to {out.relative_to(BENCH.parent)})")
    return 0


def report(result: dict[str, Any]) -> None:
    rows, copy = result["rows"], result["copy"]
    rounds = f"median of {result['rounds']} rounds"
    print(f"### Streaming export of {rows:,} rows ({rounds})\n")
    print_table(
        ("COPY path (PostgreSQL)", "rows/s"),
        [
            (
                "`psql \\copy` of the same query",
                f"{copy['psql']['rows_per_second']:,.0f}",
            ),
            (
                "`psql \\copy events` (the raw table)",
                f"{copy['psql_table']['rows_per_second']:,.0f}",
            ),
            (
                "`GET /api/events/export.csv` via nginx -> gunicorn",
                f"{copy['app']['rows_per_second']:,.0f}",
            ),
            (
                f"ratio to the same query (target >= {COPY_TARGET})",
                f"{copy['ratio']:.2f}",
            ),
            (
                f"ratio to the raw table (target >= {COPY_TARGET})",
                f"{copy['ratio_table']:.2f}",
            ),
        ],
    )
    print(
        "\nThe app's output and psql's of its query are byte-identical (sha256);"
        " row counts checked every round.\n"
    )
    table = []
    for dialect, figures in result["portable"].items():
        for fmt in ("csv", "ndjson"):
            app, plain = figures[f"app_{fmt}"], figures[f"plain_{fmt}"]
            what = "COPY" if (dialect, fmt) == ("postgresql", "csv") else "portable"
            table.append(
                (
                    f"{dialect} {fmt} ({what})",
                    f"{plain['rows_per_second']:,.0f}",
                    f"{app['rows_per_second']:,.0f}",
                    f"{figures[f'ratio_{fmt}']:.2f}",
                )
            )
    if table:
        print_table(
            (
                "in-process generator",
                "plain ORM `yield_per` loop rows/s",
                "app rows/s",
                f"ratio (target >= {PORTABLE_TARGET})",
            ),
            table,
        )
        print("\nEach app/plain pair wrote the same bytes (sha256).\n")
    print_table(
        ("gunicorn worker, one export", "rows", "VmHWM before", "growth MB"),
        [
            (
                name.replace("_", " "),
                f"{figures['rows']:,}",
                f"{figures['hwm_before_kib'] / 1024:.1f} MB",
                f"{figures['growth_mb']:.1f} (target < {RSS_TARGET_MB})",
            )
            for name, figures in result["rss"].items()
        ],
    )


if __name__ == "__main__":
    sys.exit(main())

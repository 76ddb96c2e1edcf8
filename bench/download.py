"""Benchmark: downloading a finished export, and what a slow client costs.

Throughput of one SIZE_MB file (default 512 MiB, a finished export job of
one account recorded in PostgreSQL with its file in EXPORT_DIR), median of
alternating rounds, every download's size checked and each path's sha256
once. The download link is the export's signed ``download_url``, read once
from ``GET /api/exports/<id>`` with the account's bearer token (issued by
``flask tokens issue``); the downloads themselves send no token, as a
browser following the link would not:

(a) ``GET /api/exports/<id>/download?signature=...`` through nginx: the app
    checks the signature and answers with X-Accel-Redirect, and nginx sends
    the file (production settings);
(b) the same file from nginx's plain ``/static/`` location (the shipped one);
(c) the same endpoint straight from gunicorn with ``EXPORT_X_ACCEL=false``,
    which serves it with ``send_file``.
Targets: (a)/(b) >= 0.9; (a)/(c) is reported.

Slow-client probe: gunicorn with one sync worker (1 thread) behind nginx.
A client downloads the export at a limited rate while small requests
(``GET /healthz``) go through the same nginx; each probe has a timeout so
nothing hangs. With X-Accel-Redirect the worker is free at once (target:
probes < 50 ms); with ``send_file`` it is busy until nginx has taken the
whole file into its buffers and temporary file, and without nginx until the
client has read it all, or until gunicorn's timeout kills the busy worker
and cuts the download short (the table says which).

    .venv/bin/python bench/download.py [--size-mb 512] [--rounds 9]
        [--client-rate-mb 8] [--probes 10] [--probe-timeout 5] [--project PATH]

Writes bench/results/download.json and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

from stack import (
    BENCH,
    HOST,
    Caller,
    Project,
    Stack,
    app_env,
    free_port,
    http_get,
    http_stream,
    migrate_and_authorize,
    print_table,
    run,
    summary,
    workspace,
    write_result,
)

RATIO_TARGET = 0.9
PROBE_TARGET_MS = 50
MIB = 1024 * 1024


def create_export(
    project: Project, env: dict[str, str], size_mb: int, caller: Caller
) -> dict[str, Any]:
    command = [str(project.python), str(BENCH / "download_runner.py")]
    command += [project.package, str(size_mb), str(caller.owner_id)]
    output = run(command, cwd=project.path, env=env, stdout=subprocess.PIPE).stdout
    job: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return job


def signed_download_path(port: int, job: dict[str, Any], caller: Caller) -> str:
    """The export's signed ``download_url``, as its status shows the owner;
    checks on the way that the download refuses a request without one."""
    status, body = http_get(
        port, f"/api/exports/{job['id']}", headers=caller.header_lines
    )
    if status != 200:
        raise RuntimeError(f"export status: {status} {body[:500]!r}")
    path: str = json.loads(body)["download_url"]
    if not path.startswith(f"/api/exports/{job['id']}/download?signature="):
        raise RuntimeError(f"unexpected download_url {path!r}")
    unsigned, _ = http_get(port, path.partition("?")[0])
    if unsigned != 403:
        raise RuntimeError(f"a download without a signature answered {unsigned}")
    return path


def download(port: int, path: str, hash_it: bool = False) -> tuple[int, str]:
    size = 0
    hasher = hashlib.sha256()
    for chunk in http_stream(port, path):
        size += len(chunk)
        if hash_it:
            hasher.update(chunk)
    return size, hasher.hexdigest() if hash_it else ""


def throughput(
    paths: dict[str, tuple[int, str]], job: dict[str, Any], rounds: int
) -> dict[str, Any]:
    for name, (port, path) in paths.items():
        size, sha256 = download(port, path, hash_it=True)
        if (size, sha256) != (job["size"], job["sha256"]):
            raise RuntimeError(f"{name}: {size} bytes, sha256 {sha256}; expected {job}")
    timings: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, (port, path) in paths.items():
            started = time.perf_counter()
            size, _ = download(port, path)
            timings[name].append(time.perf_counter() - started)
            if size != job["size"]:
                raise RuntimeError(f"{name}: {size} bytes of {job['size']}")
    result: dict[str, Any] = {}
    for name, values in timings.items():
        result[name] = summary(values)
        result[name]["mb_per_second"] = job["size"] / MIB / result[name]["median"]
    return result


class SlowClient(threading.Thread):
    """Downloads ``path`` at ``rate`` bytes/s until stopped or done."""

    def __init__(self, port: int, path: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.port, self.path, self.rate = port, path, rate
        self.received = 0
        self.finished = False
        self.stopped = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with socket.socket() as client:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                client.settimeout(120)
                client.connect((HOST, self.port))
                client.sendall(
                    f"GET {self.path} HTTP/1.0\r\nHost: {HOST}\r\n\r\n".encode()
                )
                started = time.monotonic()
                while not self.stopped.is_set():
                    data = client.recv(65536)
                    if not data:
                        self.finished = True
                        return
                    self.received += len(data)
                    ahead = self.received / self.rate - (time.monotonic() - started)
                    if ahead > 0:
                        self.stopped.wait(ahead)
        except OSError as error:
            self.error = error


def probe(port: int, timeout: float) -> float | None:
    """Milliseconds for ``GET /healthz``; None when it timed out."""
    started = time.perf_counter()
    try:
        status, _ = http_get(port, "/healthz", timeout=timeout)
    except TimeoutError:
        return None
    if status != 200:
        raise RuntimeError(f"/healthz answered {status}")
    return (time.perf_counter() - started) * 1000


def slow_client_probe(
    port: int, path: str, size: int, args: argparse.Namespace
) -> dict[str, Any]:
    client = SlowClient(port, path, args.client_rate_mb * MIB)
    client.start()
    try:
        wait_until = time.monotonic() + 10
        while client.received < MIB and time.monotonic() < wait_until:
            time.sleep(0.05)
        if client.received == 0:
            raise RuntimeError(f"the slow client got nothing from {path}")
        probes: list[float | None] = []
        for _ in range(args.probes):
            probes.append(probe(port, args.probe_timeout))
            time.sleep(0.2)
        received = client.received
    finally:
        client.stopped.set()
        client.join(30)
    answered = [value for value in probes if value is not None]
    return {
        "probes_ms": probes,
        "timeouts": len(probes) - len(answered),
        "median_ms": statistics.median(answered) if answered else None,
        "max_ms": max(answered) if answered else None,
        "client_received_mb": received / MIB,
        "client_download": (
            f"cut short at {received / MIB:.0f} MiB"
            if client.finished and received < size
            else "complete"
            if client.finished
            else "in progress"
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--client-rate-mb", type=float, default=8)
    parser.add_argument("--probes", type=int, default=10)
    parser.add_argument("--probe-timeout", type=float, default=5)
    parser.add_argument("--project", help="a baked project with its .venv")
    args = parser.parse_args()

    result: dict[str, Any] = {"size_mb": args.size_mb, "rounds": args.rounds}
    with workspace(args.project, "download") as (project, workdir, database_url):
        prefix = workdir / "nginx"
        # Every gunicorn of the run shares SECRET_KEY, so one signed link
        # serves them all; it stays valid longer than the longest run.
        env = app_env(
            workdir,
            database_url,
            EXPORT_DIR=str(prefix / "exports"),
            EXPORT_DOWNLOAD_URL_TTL_SECONDS="3600",
        )
        caller = migrate_and_authorize(project, env)
        job = create_export(project, env, args.size_mb, caller)
        stack = Stack(project, workdir)
        try:
            app_port, send_file_port = free_port(), free_port()
            accel = stack.gunicorn(
                "gunicorn", {**env, "GUNICORN_WORKERS": "2"}, app_port
            )
            stack.gunicorn(
                "gunicorn-send-file",
                {**env, "GUNICORN_WORKERS": "2", "EXPORT_X_ACCEL": "false"},
                send_file_port,
            )
            port, _ = stack.nginx("nginx", app_port)
            download_path = signed_download_path(port, job, caller)
            static = prefix / "static" / job["filename"]
            os.link(prefix / "exports" / job["filename"], static)
            result["throughput"] = throughput(
                {
                    "x_accel": (port, download_path),
                    "static": (port, f"/static/{job['filename']}"),
                    "send_file": (send_file_port, download_path),
                },
                job,
                args.rounds,
            )
            stack.stop(accel)

            sync = {**env, "GUNICORN_WORKER_CLASS": "sync", "GUNICORN_WORKERS": "1"}
            probes: dict[str, Any] = {}
            for name, extra, via_nginx in (
                ("x_accel_via_nginx", {}, True),
                ("send_file_via_nginx", {"EXPORT_X_ACCEL": "false"}, True),
                ("send_file_direct", {"EXPORT_X_ACCEL": "false"}, False),
            ):
                worker = stack.gunicorn(f"gunicorn-{name}", {**sync, **extra}, app_port)
                probes[name] = slow_client_probe(
                    port if via_nginx else app_port, download_path, job["size"], args
                )
                with contextlib.suppress(RuntimeError):
                    stack.stop(worker)
            result["slow_client"] = probes
        finally:
            stack.close()

    figures = result["throughput"]
    result["ratios"] = {
        "x_accel_over_static": figures["x_accel"]["mb_per_second"]
        / figures["static"]["mb_per_second"],
        "x_accel_over_send_file": figures["x_accel"]["mb_per_second"]
        / figures["send_file"]["mb_per_second"],
    }
    result["targets"] = {
        "x_accel_over_static": RATIO_TARGET,
        "probe_ms": PROBE_TARGET_MS,
    }
    result["client_rate_mb"] = args.client_rate_mb
    out = write_result("download", result)
    report(result)
    print(f"\n(written to {out.relative_to(BENCH.parent)})")
    return 0


def milliseconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def report(result: dict[str, Any]) -> None:
    figures, ratios = result["throughput"], result["ratios"]
    print(
        f"### Download of a {result['size_mb']} MiB export "
        f"(median of {result['rounds']} rounds)\n"
    )
    print_table(
        ("path", "MiB/s"),
        [
            ("(b) nginx static location", f"{figures['static']['mb_per_second']:.0f}"),
            (
                "(a) app -> X-Accel-Redirect -> nginx",
                f"{figures['x_accel']['mb_per_second']:.0f}",
            ),
            (
                "(c) app `send_file`, gunicorn direct",
                f"{figures['send_file']['mb_per_second']:.0f}",
            ),
            (
                f"(a)/(b) (target >= {RATIO_TARGET})",
                f"{ratios['x_accel_over_static']:.2f}",
            ),
            ("(a)/(c)", f"{ratios['x_accel_over_send_file']:.2f}"),
        ],
    )
    print(
        f"\n### `GET /healthz` while one client downloads at "
        f"{result['client_rate_mb']:g} MiB/s (gunicorn: 1 sync worker, 1 thread)\n"
    )
    labels = {
        "x_accel_via_nginx": "X-Accel-Redirect, via nginx",
        "send_file_via_nginx": "`send_file`, via nginx",
        "send_file_direct": "`send_file`, gunicorn direct",
    }
    print_table(
        ("download served by", "median ms", "max ms", "timeouts", "the download"),
        [
            (
                labels[name],
                milliseconds(probe["median_ms"]),
                milliseconds(probe["max_ms"]),
                f"{probe['timeouts']}/{len(probe['probes_ms'])}",
                probe["client_download"],
            )
            for name, probe in result["slow_client"].items()
        ],
    )
    print(f"\nTarget with X-Accel-Redirect: every probe < {PROBE_TARGET_MS} ms.")


if __name__ == "__main__":
    sys.exit(main())

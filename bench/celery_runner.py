"""Runs inside a baked project's virtualenv: starts a real worker process
and times N no-op tasks of each kind through it. Prints JSON.

Rounds alternate between the two task kinds so drift (cache warmth, other
load on the machine) hits both alike; the median round of each is kept.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def delete_keys(url: str, prefix: str) -> None:
    from redis import Redis

    client = Redis.from_url(url)
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)


def run_round(task: object, count: int) -> float:
    started = time.perf_counter()
    for n in range(count - 1):
        task.apply_async((n,))  # type: ignore[attr-defined]
    # Concurrency 1, prefetch 1, acks late: messages run in order, so the
    # last one finishing means all have.
    task.apply_async((count,), ignore_result=False).get(timeout=600)  # type: ignore[attr-defined]
    return time.perf_counter() - started


def main() -> None:
    package, count, rounds, workdir = (
        sys.argv[1],
        int(sys.argv[2]),
        int(sys.argv[3]),
        Path(sys.argv[4]),
    )
    os.environ["BENCH_PACKAGE"] = package
    log = workdir / "worker.log"
    command = [
        sys.executable, "-m", "celery", "-A", f"{package}.worker", "worker",
        "--pool=prefork", "--concurrency=1", "--loglevel=WARNING",
        "--include=celery_bench_tasks", "--without-gossip", "--without-mingle",
        "--without-heartbeat",
    ]  # fmt: skip
    with log.open("wb") as out:
        worker = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)  # noqa: S603
    try:
        import celery_bench_tasks as tasks

        # The first result doubles as the readiness check; then warm both paths.
        tasks.noop_bare.apply_async((0,), ignore_result=False).get(timeout=120)
        run_round(tasks.noop_app, 100)
        run_round(tasks.noop_bare, 100)
        timings: dict[str, list[float]] = {"app_context": [], "bare": []}
        for _ in range(rounds):
            timings["app_context"].append(run_round(tasks.noop_app, count))
            timings["bare"].append(run_round(tasks.noop_bare, count))
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        delete_keys(os.environ["REDIS_URL"], os.environ["CELERY_KEY_PREFIX"])
    result = {
        kind: {
            "seconds": statistics.median(values),
            "tasks_per_second": count / statistics.median(values),
            "rounds": values,
        }
        for kind, values in timings.items()
    }
    result["ratio"] = (
        result["app_context"]["tasks_per_second"] / result["bare"]["tasks_per_second"]
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()

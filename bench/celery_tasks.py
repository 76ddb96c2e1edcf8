"""Benchmark: Celery tasks per second through a real worker process.

Bakes the template with defaults, installs the project, and runs
``celery_runner.py`` inside it against Redis: 2,000 no-op tasks with the
project's app-context base class against a bare ``celery.Task``, in the
same worker, in the same run. Target: ratio >= 0.9.

    .venv/bin/python bench/celery_tasks.py [--tasks 2000] [--rounds 3]

Writes bench/results/celery.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from stack import BENCH, bake_and_install, run

TARGET = 0.9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()

    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    with tempfile.TemporaryDirectory(prefix="celery-bench-") as tmp:
        workdir = Path(tmp)
        baked = bake_and_install(workdir)
        project, python, package = baked.path, baked.python, baked.package
        env = {
            **os.environ,
            "APP_ENV": "testing",
            "REDIS_URL": args.redis_url,
            "CELERY_KEY_PREFIX": prefix,
            "DATABASE_URL": f"sqlite:///{workdir / 'bench.db'}",
            "INSTANCE_PATH": str(workdir / "instance"),
            "PYTHONPATH": str(BENCH),
            "LOG_LEVEL": "WARNING",
            # Measure per-task cost, not pool-process replacement: a recycle
            # stalls the pool for seconds and lands in random rounds.
            "CELERY_MAX_TASKS_PER_CHILD": "0",
        }
        runner = [str(python), str(BENCH / "celery_runner.py"), package]
        runner += [str(args.tasks), str(args.rounds), str(workdir)]
        output = run(runner, env=env, cwd=project, stdout=subprocess.PIPE).stdout
    result = json.loads(output.strip().splitlines()[-1])
    result.update(tasks=args.tasks, rounds=args.rounds, target=TARGET)
    out = BENCH / "results" / "celery.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")

    app, bare = result["app_context"], result["bare"]
    print(f"| {args.tasks} no-op tasks | tasks/s, median of {args.rounds} rounds |")
    print("| --- | --- |")
    print(f"| bare `celery.Task` | {bare['tasks_per_second']:.0f} |")
    print(f"| `AppTask` (app context, request id) | {app['tasks_per_second']:.0f} |")
    print(f"| ratio (target >= {TARGET}) | {result['ratio']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

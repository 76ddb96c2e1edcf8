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
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from cookiecutter.main import cookiecutter

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT / "tests"))
from template_support import defaults, find_python  # noqa: E402

TARGET = 0.9


def run(command: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=True, text=True, **options)  # noqa: S603


def bake_and_install(workdir: Path) -> tuple[Path, Path, str]:
    project = Path(
        cookiecutter(
            str(ROOT), no_input=True, output_dir=str(workdir), default_config=True
        )
    )
    package = next(p.name for p in (project / "src").iterdir() if p.is_dir())
    venv = project / ".venv"
    python = venv / "bin" / "python"
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or "uv"
    env = {**os.environ, "UV_CACHE_DIR": str(ROOT / ".cache" / "uv")}
    interpreter = find_python(defaults()["python_version"]) or sys.executable
    run([uv, "venv", "-q", "--python", interpreter, str(venv)], env=env)
    run(
        [uv, "pip", "install", "-q", "--python", str(python), "-e", str(project)],
        env=env,
    )
    return project, python, package


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
        project, python, package = bake_and_install(workdir)
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

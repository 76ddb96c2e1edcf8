"""Finish the generated project: drop what the chosen options exclude and
say what to do next.

Runs inside the new project directory. Never touches the network, and writes
nothing random: the same answers give the same files, so ``cruft update`` can
run it again on the old and the new template without a spurious difference.
The local ``.env`` and its fresh secret are the Makefile's job (``make .env``,
on first use), and stay out of git.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

LICENSES_DIR = Path("LICENSES")


def install_license(license_name: str) -> None:
    """Keep the chosen license text as ``LICENSE`` and drop the others."""
    chosen = LICENSES_DIR / f"{license_name}.txt"
    shutil.move(chosen, "LICENSE")
    shutil.rmtree(LICENSES_DIR)


def remove_paths(paths: list[str]) -> None:
    for name in paths:
        path = Path(name)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def remove_empty_folders(names: tuple[str, ...]) -> None:
    """Drop folders whose every file belonged to options not chosen."""
    for name in names:
        path = Path(name)
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def paths_to_remove(answers: dict[str, str]) -> list[str]:
    """Files that belong to options not chosen."""
    paths: list[str] = []
    if answers["database"] != "postgresql":
        package = Path("src") / answers["package_name"]
        paths += [
            str(package / "postgres.py"),
            str(package / "loop_monitor.py"),
            "tests/pg_cluster.py",
            "tests/pg_database.py",
            "tests/test_database_outage.py",
            "tests/test_gevent_worker.py",
            "tests/slow_app.py",
            "tests/slow_app_redis.py",
        ]
    if answers["use_celery"] != "y":
        package = Path("src") / answers["package_name"]
        paths += [
            str(package / "celery_app.py"),
            str(package / "worker.py"),
            str(package / "worker_consumer.py"),
            str(package / "jobs"),
            str(package / "exports"),
            str(package / "metrics" / "tasks.py"),
            "docs/background-jobs.md",
            "migrations/versions/0002_create_jobs.py",
            "migrations/versions/0004_jobs_belong_to_accounts.py",
            "migrations/versions/0005_job_errors_and_reaping.py",
            "tests/celery_support.py",
            "tests/slow_app_redis.py",
            "tests/test_sentry_tasks.py",
            "tests/test_tasks.py",
            "tests/test_limits_redis.py",
            "tests/test_migrations_jobs.py",
            "tests/test_ownership_jobs.py",
            "tests/test_tracing_tasks.py",
            "tests/test_job_failures.py",
            "tests/test_job_reaper.py",
            "tests/test_task_metrics.py",
            "tests/test_worker_process.py",
            "tests/test_broker_outage.py",
            "tests/worker_gate.py",
            "tests/overrun_task.py",
            "tests/test_worker_memory.py",
            "tests/memory_probe.py",
        ]
    return paths


LOCKS_DIR = Path("requirements") / "locks"
LOCK_FILES = ("requirements.lock", "requirements-dev.lock")


def lock_set_name(answers: dict[str, str]) -> str:
    """The folder under ``requirements/locks`` pinning this combination of
    options: each one changes the dependencies (psycopg, Celery)."""
    celery = "celery" if answers["use_celery"] == "y" else "nocelery"
    return f"{answers['database']}-{celery}"


def install_lock_files(answers: dict[str, str]) -> None:
    """Keep the locks of the chosen options as ``requirements/*.lock`` and
    drop the others."""
    chosen = LOCKS_DIR / lock_set_name(answers)
    for name in LOCK_FILES:
        shutil.move(chosen / name, LOCKS_DIR.parent / name)
    shutil.rmtree(LOCKS_DIR)


def next_steps(answers: dict[str, str]) -> str:
    return (
        f"\n{answers['project_name']} is ready in ./{answers['project_slug']}\n\n"
        f"  cd {answers['project_slug']}\n"
        "  make run     # install, write .env with a fresh SECRET_KEY, migrate and\n"
        "               # seed SQLite, serve on 127.0.0.1:5000\n"
        "  make test    # install dev tools and run the test suite\n"
    )


def main() -> int:
    answers = json.loads(r"""{{ cookiecutter | jsonify }}""")
    install_license(answers["open_source_license"])
    remove_paths(paths_to_remove(answers))
    remove_empty_folders(("docs",))
    install_lock_files(answers)
    print(next_steps(answers))
    return 0


if __name__ == "__main__":
    sys.exit(main())

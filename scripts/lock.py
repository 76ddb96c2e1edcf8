"""Regenerate the lock files shipped in the template.

    make lock                        # pins kept where pyproject still allows them
    make lock LOCK_ARGS=--upgrade    # every pin moved to the newest allowed

The generated project's dependencies depend on two options (psycopg for
PostgreSQL, Celery for use_celery), so the template ships one pair of locks
per combination under ``{{cookiecutter.project_slug}}/requirements/locks/``
and the post-gen hook keeps the chosen pair. Each pair is made by baking that
combination with the lowest Python on offer (a universal lock for it holds on
every later one) and running the baked project's own ``make lock``: the
command a generated project's users run, so both stay the same.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from template_tools.template import (
    REPO_ROOT,
    TEMPLATE_DIR,
    bake_into,
    choice_options,
    dependency_combinations,
    load_by_path,
    write_cookiecutter_config,
)

SLUG_JINJA = "{{ cookiecutter.project_slug }}"


def lowest_python(versions: list[str]) -> str:
    return min(versions, key=lambda version: tuple(map(int, version.split("."))))


def uv_path() -> str:
    beside = Path(sys.executable).parent / "uv"
    found = str(beside) if beside.is_file() else shutil.which("uv")
    if found is None:
        sys.exit("uv not found: run `make venv` first")
    return found


def lock_combination(
    answers: dict[str, str], hook, work_dir: Path, lock_args: str
) -> Path:
    """Bake ``answers``, run its ``make lock``, copy the locks back; returns
    the template folder written."""
    lock_dir = TEMPLATE_DIR / hook.LOCKS_DIR / hook.lock_set_name(answers)
    lock_dir.mkdir(parents=True, exist_ok=True)
    for name in hook.LOCK_FILES:
        (lock_dir / name).touch()  # the first run has nothing to keep yet
    config = write_cookiecutter_config(work_dir)
    project = bake_into(work_dir / "bake", config, **answers)
    make_lock = ["make", "--no-print-directory", "lock", f"UV={uv_path()}"]
    make_lock.append(f"LOCK_ARGS={lock_args}")
    subprocess.run(make_lock, cwd=project, check=True)  # noqa: S603
    # Annotations name the project ("# via flask-service (pyproject.toml)"):
    # write them back as the slug each bake fills in.
    baked_name = f"{project.name} (pyproject.toml)"
    for name in hook.LOCK_FILES:
        text = (project / hook.LOCKS_DIR.parent / name).read_text(encoding="utf-8")
        text = text.replace(baked_name, f"{SLUG_JINJA} (pyproject.toml)")
        (lock_dir / name).write_text(text, encoding="utf-8")
    return lock_dir


def main(argv: list[str]) -> int:
    lock_args = " ".join(argv)
    python_version = lowest_python(choice_options()["python_version"])
    hook = load_by_path("hooks/post_gen_project.py")
    for combination in dependency_combinations():
        answers = {**combination, "python_version": python_version}
        with tempfile.TemporaryDirectory(prefix="lock-") as work_dir:
            written = lock_combination(answers, hook, Path(work_dir), lock_args)
        print(f"locked {written.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

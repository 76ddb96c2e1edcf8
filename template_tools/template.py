"""The template itself: its options, read from ``cookiecutter.json``, and
baking it, through cookiecutter's API or its command line.

The tests parametrize over the option matrix (pytest collects parameters
before any fixture exists), ``scripts/lock.py`` locks each dependency
combination and the benchmarks bake the defaults.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from cookiecutter.main import cookiecutter

REPO_ROOT = Path(__file__).resolve().parent.parent
COOKIECUTTER_JSON = REPO_ROOT / "cookiecutter.json"
TEMPLATE_DIR = REPO_ROOT / "{{cookiecutter.project_slug}}"


def load_by_path(relative_path: str) -> ModuleType:
    """A Python file cookiecutter runs by path (a hook, ``template_answers.py``),
    imported by path for its names.

    The hooks hold raw Jinja in a string and only run their ``main()`` under
    ``__main__``, so importing one runs no hook.
    """
    path = REPO_ROOT / relative_path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_cookiecutter_json() -> dict[str, Any]:
    return json.loads(COOKIECUTTER_JSON.read_text(encoding="utf-8"))


def choice_options() -> dict[str, list[Any]]:
    """Every option with a fixed set of values, in ``cookiecutter.json`` order.

    Lists are choice variables (first item is the default). Booleans are yes/no
    variables and contribute both values, default first. Keys starting with
    ``_`` (``__prompts__``, ``_extensions``, ``_copy_without_render``...) are
    cookiecutter settings, not questions.
    """
    options: dict[str, list[Any]] = {}
    for key, value in load_cookiecutter_json().items():
        if key.startswith("_"):
            continue
        if isinstance(value, list):
            options[key] = list(value)
        elif isinstance(value, bool):
            options[key] = [value, not value]
    return options


def dependency_combinations() -> list[dict[str, str]]:
    """Every combination of the options that change the generated project's
    dependencies (psycopg, Celery), and with them its lock, container and
    workflow files."""
    options = choice_options()
    return [
        {"database": database, "use_celery": use_celery}
        for database, use_celery in itertools.product(
            options["database"], options["use_celery"]
        )
    ]


def defaults() -> dict[str, Any]:
    return {key: values[0] for key, values in choice_options().items()}


def write_cookiecutter_config(directory: Path) -> Path:
    """A cookiecutter config that keeps replay files out of ``~``.

    Parallel workers would otherwise race on ``~/.cookiecutter_replay``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "cookiecutter-config.yaml"
    # JSON strings are valid YAML scalars, whatever the path contains.
    config.write_text(
        f"cookiecutters_dir: {json.dumps(str(directory / 'cookiecutters'))}\n"
        f"replay_dir: {json.dumps(str(directory / 'replay'))}\n",
        encoding="utf-8",
    )
    return config


def bake_into(output_dir: Path, config_file: Path, **extra_context: Any) -> Path:
    """Bake the template with ``extra_context`` into ``output_dir``.

    Returns the generated project directory. Raises what cookiecutter raises
    (``FailedHookException`` when a hook rejects the answers).
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    project = cookiecutter(
        str(REPO_ROOT),
        no_input=True,
        extra_context=extra_context,
        output_dir=str(output_dir),
        config_file=str(config_file),
    )
    return Path(project)


def bake_cli(
    output_dir: Path, config_file: Path, **extra_context: str
) -> subprocess.CompletedProcess[str]:
    """Bake through the ``cookiecutter`` CLI, as a user would.

    Hook messages go to the hook subprocess's stderr, which only the CLI shows,
    so tests that assert on messages use this. stdout and stderr are merged.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "cookiecutter",
        "--no-input",
        "--config-file",
        str(config_file),
        "--output-dir",
        str(output_dir),
        str(REPO_ROOT),
        *(f"{key}={value}" for key, value in extra_context.items()),
    ]
    return subprocess.run(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def text_files(project: Path) -> Iterator[tuple[Path, str]]:
    """(path, text) of every UTF-8 text file of a bake, not of its ``.venv``."""
    for path in sorted(project.rglob("*")):
        if not path.is_file() or ".venv" in path.relative_to(project).parts:
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue  # binary
        try:
            yield path, data.decode("utf-8")
        except UnicodeDecodeError:
            continue  # binary


def lines_matching(project: Path, found: Callable[[str], bool]) -> list[str]:
    """``path:line: text`` of every line of the bake's text files that
    ``found`` accepts."""
    return [
        f"{path.relative_to(project)}:{number}: {line}"
        for path, text in text_files(project)
        for number, line in enumerate(text.splitlines(), start=1)
        if found(line)
    ]

"""Plain helpers shared by the template tests (importable at collection time).

Fixtures live in ``conftest.py``; what is needed to *parametrize* tests (the
option matrix read from ``cookiecutter.json``) lives here, because pytest
collects parameters before any fixture exists.
"""

from __future__ import annotations

import functools
import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cookiecutter.main import cookiecutter

REPO_ROOT = Path(__file__).resolve().parent.parent
COOKIECUTTER_JSON = REPO_ROOT / "cookiecutter.json"


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


def is_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@functools.cache
def find_python(version: str) -> str | None:
    """Real path of a working ``python{version}`` interpreter, or ``None``.

    A pyenv shim is on PATH for every installed version but only runs the ones
    the pyenv global/local setting selects; ``PYENV_VERSION`` selects this one.
    """
    if shutil.which(f"python{version}") is None:
        return None
    probe = "import sys; print(sys.executable); print('%d.%d' % sys.version_info[:2])"
    for env in (os.environ, {**os.environ, "PYENV_VERSION": version}):
        result = subprocess.run(
            [f"python{version}", "-c", probe],
            capture_output=True,
            text=True,
            check=False,
            env=env,
            timeout=60,
        )
        lines = result.stdout.split()
        if result.returncode == 0 and len(lines) == 2 and lines[1] == version:
            return lines[0]
    return None


def require_python(version: str) -> str:
    """``find_python`` or skip; on CI (``CI=true``) a missing version fails."""
    executable = find_python(version)
    if executable is None:
        message = f"python{version} is not available"
        if is_ci():
            pytest.fail(f"{message}; CI=true requires every python_version")
        pytest.skip(message)
    return executable


def run(
    command: list[str],
    cwd: Path | None,
    env: dict[str, str] | None = None,
    timeout: int = 600,
) -> subprocess.CompletedProcess[str]:
    """Run a tool, output and errors together, for an assertion message."""
    return subprocess.run(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
        timeout=timeout,
    )


# Settings a developer may have exported; each run states its own.
SCRUBBED_ENV = ("APP_ENV", "DATABASE_URL", "SECRET_KEY", "VIRTUAL_ENV", "PYTHONPATH")


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without app settings or outer pytest options."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in SCRUBBED_ENV and not key.startswith("PYTEST_")
    }
    env.update(extra)
    return env

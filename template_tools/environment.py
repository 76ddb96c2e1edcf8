"""What a run of the template's tools takes from the machine and gives the
processes it starts: CI or not, the Python interpreters on offer, and the
environment of a generated app."""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import subprocess

# Settings a developer may have exported; each run states its own.
SCRUBBED_ENV = ("APP_ENV", "DATABASE_URL", "SECRET_KEY", "VIRTUAL_ENV", "PYTHONPATH")


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


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without app settings or outer pytest options."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in SCRUBBED_ENV and not key.startswith("PYTEST_")
    }
    env.update(extra)
    return env


def production_env(**settings: str) -> dict[str, str]:
    """``clean_env`` with what every production run of a generated app needs:
    ``APP_ENV=production``, a fresh ``SECRET_KEY`` (production refuses a
    missing, short or example one) and unbuffered output for its logs.
    ``settings`` adds the rest (``DATABASE_URL``...) or overrides these."""
    required = {
        "APP_ENV": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "PYTHONUNBUFFERED": "1",
    }
    return clean_env(**{**required, **settings})

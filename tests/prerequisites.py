"""What a test needs from the machine, or it skips: a laptop may lack it. On
CI (``CI=true``) a missing prerequisite is a broken environment, so the test
fails instead."""

from __future__ import annotations

import shutil
import socket
from typing import NoReturn

import pytest

from template_tools.environment import find_python, is_ci
from template_tools.nginx import find_nginx


def skip_or_fail(message: str) -> NoReturn:
    if is_ci():
        pytest.fail(f"{message}; CI=true requires it")
    pytest.skip(message)


def require_python(version: str) -> str:
    """``find_python``, or skip (fail under CI=true)."""
    executable = find_python(version)
    if executable is None:
        skip_or_fail(f"python{version} is not available")
    return executable


def require_nginx() -> str:
    """``find_nginx``, or skip (fail under CI=true; ``make test`` installs it
    there)."""
    found = find_nginx()
    if found is None:
        skip_or_fail("nginx is not installed")
    return found


def require_chromium() -> str:
    """Debian's chromium, or skip (fail under CI=true; ``make test`` installs
    it there: a test tool's own browser download cannot work everywhere)."""
    found = shutil.which("chromium")
    if found is None:
        skip_or_fail("chromium is not installed")
    return found


def require_service(name: str, host: str, port: int) -> None:
    """Skip (fail under CI=true) when ``host:port`` does not accept TCP
    connections."""
    try:
        with socket.create_connection((host, port), timeout=3):
            return
    except OSError as error:
        skip_or_fail(f"{name} is not reachable on {host}:{port} ({error})")

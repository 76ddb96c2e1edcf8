"""Processes the tests and benchmarks run: tools run to completion, their
output kept for a message, and services, each in its own process group,
logging to a file, stopped gracefully (SIGTERM) and then for good (SIGKILL)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

STOP_SECONDS = 15


def wait_for(
    condition: Callable[[], Any], seconds: float, what: str, interval: float = 0.1
) -> Any:
    """Poll ``condition`` until it returns something truthy, and return
    that; raise TimeoutError naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        last = condition()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {seconds}s waiting for {what} (last: {last!r})"
    )


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


@dataclass
class Service:
    """A process of the stack, in its own process group, logging to a file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    log_file: IO[bytes] = field(repr=False)

    def stop(self) -> None:
        """SIGTERM the group (a graceful stop), SIGKILL it if that hangs."""
        for sig, grace in ((signal.SIGTERM, STOP_SECONDS), (signal.SIGKILL, 5)):
            if self.process.poll() is not None:
                break
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                continue
        # The leader may be gone while its children linger: end the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log_file.close()

    def tail(self, lines: int = 60) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return f"--- {self.name} ({self.log}) ---\n" + "\n".join(
            text.splitlines()[-lines:]
        )


def start(
    name: str, command: list[str], cwd: Path, env: dict[str, str], logs: Path
) -> Service:
    log = logs / f"{name}.log"
    log_file = log.open("wb")
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return Service(name, process, log, log_file)


@contextlib.contextmanager
def background(
    name: str, command: list[str], cwd: Path, env: dict[str, str], logs: Path
) -> Iterator[Service]:
    """``start`` for the length of a ``with`` block."""
    service = start(name, command, cwd, env, logs)
    try:
        yield service
    finally:
        service.stop()

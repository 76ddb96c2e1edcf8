"""A PostgreSQL server of a test's own, to stop, freeze and restart.

Tests that break the database never touch a shared server: they run
``initdb`` into a temporary directory and start ``postgres`` on a free port
of 127.0.0.1. Freezing sends ``SIGSTOP`` to the postmaster and each of its
children (every backend runs in a session of its own, so no process group
holds them all), thawing ``SIGCONT``. As
root (a container, CI) the server runs as the ``postgres`` user, since
PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from support import free_port, skip_or_fail, wait_for

SERVER_USER = "postgres"
Process = subprocess.Popen[bytes]


def binaries() -> Path | None:
    """The newest installed server's bin directory, or None."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parent.parent.name),
    )
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def require_binaries() -> Path:
    """The server binaries: skip without them, fail under CI=true."""
    bin_dir = binaries()
    if bin_dir is None:
        skip_or_fail("PostgreSQL server binaries (initdb, postgres) are not installed")
    return bin_dir


class Cluster:
    def __init__(self, bin_dir: Path, directory: Path, port: int) -> None:
        self.bin_dir = bin_dir
        self.directory = directory
        self.data = directory / "data"
        self.port = port
        self.server: Process | None = None
        self.frozen = False

    @property
    def url(self) -> str:
        return f"postgresql://{SERVER_USER}@127.0.0.1:{self.port}/app"

    def _run(self, *command: str, output: Any = subprocess.DEVNULL) -> Process:
        as_root = os.geteuid() == 0
        return subprocess.Popen(  # noqa: S603 - the tests' own argv
            [str(self.bin_dir / command[0]), *command[1:]],
            env={**os.environ, "PGDATA": str(self.data)},
            user=SERVER_USER if as_root else None,
            cwd=self.directory,
            stdout=output,
            stderr=subprocess.STDOUT,
        )

    def _check(self, *command: str) -> None:
        process = self._run(*command)
        assert process.wait(timeout=60) == 0, f"{command[0]} failed"

    def init(self) -> None:
        self._check("initdb", "--no-sync", "--auth=trust", "-U", SERVER_USER)

    def start(self) -> None:
        """Start the server and wait until it takes connections."""
        with (self.directory / "server.log").open("ab") as log:
            self.server = self._run(
                "postgres",
                *("-p", str(self.port), "-k", str(self.directory)),
                *("-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"),
                output=log,
            )
        wait_for(self._ready, timeout=30, what="the test's PostgreSQL to start")

    def _ready(self) -> bool:
        assert self.server is not None
        assert self.server.poll() is None, "the test's PostgreSQL exited"
        probe = self._run("pg_isready", "-q", "-h", "127.0.0.1", "-p", str(self.port))
        return probe.wait(timeout=10) == 0

    def createdb(self) -> None:
        self._check("createdb", "-h", "127.0.0.1", "-p", str(self.port), "app")

    def processes(self) -> list[int]:
        """The postmaster's pid, then its children's."""
        assert self.server is not None
        postmaster = self.server.pid
        listed = subprocess.run(  # noqa: S603
            ["pgrep", "-P", str(postmaster)],  # noqa: S607 - procps, on PATH
            capture_output=True,
            text=True,
            check=False,
        )
        return [postmaster, *map(int, listed.stdout.split())]

    def _signal(self, number: signal.Signals) -> None:
        for pid in self.processes():
            with suppress(ProcessLookupError):  # ended meanwhile
                os.kill(pid, number)

    def freeze(self) -> None:
        """Stop every process of the server: it takes connections and
        packets (the kernel does) but answers nothing."""
        self._signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)
        self.frozen = False

    def stop(self) -> None:
        """Immediate shutdown (``pg_ctl stop -m immediate``): connections
        are cut, the next start recovers."""
        if self.server is None or self.server.poll() is not None:
            return
        if self.frozen:
            self.thaw()
        self.server.send_signal(signal.SIGQUIT)
        self.server.wait(timeout=30)
        self.server = None


@contextmanager
def private_cluster() -> Iterator[Cluster]:
    """A started server with an empty ``app`` database; removed on exit."""
    bin_dir = require_binaries()
    directory = Path(tempfile.mkdtemp(prefix="pg-cluster-"))
    if os.geteuid() == 0:
        owner = pwd.getpwnam(SERVER_USER)
        os.chown(directory, owner.pw_uid, owner.pw_gid)
    cluster = Cluster(bin_dir, directory, free_port())
    try:
        cluster.init()
        cluster.start()
        cluster.createdb()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)

"""Export files: written atomically, named only by job id."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from uuid import UUID

FORMATS = {"csv": "text/csv", "ndjson": "application/x-ndjson"}
# Readable by the web server's user, which serves the file via X-Accel-Redirect.
FILE_MODE = 0o644
TEMPORARY_PREFIX = "."
TEMPORARY_SUFFIX = ".tmp"
# What write_atomically names its temporary files (mkstemp adds the middle).
TEMPORARY_NAME = re.compile(
    r"\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    rf"\.(?:{'|'.join(FORMATS)})\.[^/]+\.tmp"
)


def filename(job_id: UUID | str, fmt: str) -> str:
    """The file's name. Built from a UUID and a known format, never from
    client input, so it cannot point outside the export directory."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}")
    return f"{UUID(str(job_id))}.{fmt}"


def write_atomically(
    directory: Path, name: str, chunks: Iterable[bytes]
) -> tuple[int, str]:
    """Write ``chunks`` to ``directory/name``; return (size, sha256 hex).

    Readers see the whole file or none: the bytes go to a temporary file in
    the same directory, are flushed to disk, and the file is renamed over
    the final name, and the directory entry flushed too.
    """
    directory.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    fd, temporary = tempfile.mkstemp(
        dir=directory, prefix=f"{TEMPORARY_PREFIX}{name}.", suffix=TEMPORARY_SUFFIX
    )
    try:
        # mkstemp makes the file 0600; nginx reads it as another user.
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        Path(temporary).replace(directory / name)
        directory_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return size, digest.hexdigest()


def remove_stale_temporaries(directory: Path, older_than: timedelta) -> int:
    """Delete temporary files last written more than ``older_than`` ago.

    A task killed mid-write (SIGKILL, the hard time limit, a lost machine)
    never reaches the cleanup above and leaves its temporary file behind.
    A live export writes its file from creation until its rename, within
    its hard time limit: give an age past that limit and no file a running
    export is writing can match. Only names ``write_atomically`` makes are
    considered. Returns how many files were deleted.
    """
    if not directory.is_dir():
        return 0
    cutoff = time.time() - older_than.total_seconds()
    removed = 0
    for path in directory.glob(f"{TEMPORARY_PREFIX}*{TEMPORARY_SUFFIX}"):
        if not TEMPORARY_NAME.fullmatch(path.name):
            continue
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue  # renamed or deleted meanwhile
    return removed

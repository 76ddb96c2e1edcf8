"""Runs inside a baked project's virtualenv (``python download_runner.py
PACKAGE SIZE_MB OWNER_ID``): records a finished CSV export job of account
OWNER_ID, as the Celery task would, and writes its file of SIZE_MB MiB of
CSV lines into EXPORT_DIR with the app's own writer. Prints the job as JSON
on the last line.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

MIB = 1024 * 1024


def lines(size: int) -> Iterator[bytes]:
    """``size`` bytes of CSV rows in 1 MiB chunks."""
    row = b"4f1c8f8e-6a1e-4c55-9d8e-0b7d1e0c2a11,42,purchase,19.99,bench,x\n"
    block = (row * (MIB // len(row) + 1))[:MIB]
    for _ in range(size // MIB):
        yield block


def main() -> None:
    package, size_mb, owner_id = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    app = importlib.import_module(package).create_app()
    db = importlib.import_module(f"{package}.extensions").db
    jobs = importlib.import_module(f"{package}.jobs.models")
    files = importlib.import_module(f"{package}.exports.files")
    tasks = importlib.import_module(f"{package}.exports.tasks")
    with app.app_context():
        job = jobs.Job(
            owner_id=owner_id,
            kind=tasks.KIND,
            params={"format": "csv", "filters": {}},
        )
        db.session.add(job)
        db.session.flush()
        name = files.filename(job.id, "csv")
        size, sha256 = files.write_atomically(
            Path(app.config["EXPORT_DIR"]), name, lines(size_mb * MIB)
        )
        job.status = jobs.JobStatus.SUCCEEDED
        job.result = {"format": "csv", "filename": name, "size": size, "sha256": sha256}
        db.session.commit()
        print(json.dumps({"id": str(job.id), **job.result}))


if __name__ == "__main__":
    main()

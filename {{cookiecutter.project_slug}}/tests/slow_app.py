"""The project's app with two routes that only the gevent tests have
(tests/test_gevent_worker.py), served by gunicorn as ``slow_app:app`` with
the tests folder on PYTHONPATH. The production app has no such routes.

- ``GET /test/wait-in-postgresql`` waits in PostgreSQL for the advisory
  lock ``TEST_LOCK_KEY``, which the test holds, then answers this worker's
  pid: a wait that ends when the test says, not after a guessed time.
- ``GET /test/spin?seconds=S`` keeps the CPU busy for S seconds without
  ever yielding, as a heavy computation in a handler would.

Logs are JSON lines, as in production, so the test can read them.
"""

from __future__ import annotations

import os
import time

from flask import request
from sqlalchemy import text

from {{ cookiecutter.package_name }} import create_app
from {{ cookiecutter.package_name }}.extensions import db

app = create_app({"LOG_JSON": True})


@app.get("/test/wait-in-postgresql")
def wait_in_postgresql() -> dict[str, int]:
    key = int(os.environ["TEST_LOCK_KEY"])
    db.session.execute(text("SELECT pg_advisory_xact_lock_shared(:key)"), {"key": key})
    db.session.rollback()  # ends the transaction and its shared lock
    return {"pid": os.getpid()}


@app.get("/test/spin")
def spin_without_yielding() -> dict[str, float]:
    seconds = float(request.args["seconds"])
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass
    return {"spun": seconds}

"""The app of bench/io_bound.py: the project's own app (``create_app``, so
every layer a real request passes through) plus one route that waits in
PostgreSQL and does nothing else.

``GET /bench/wait`` runs ``SELECT pg_sleep(BENCH_WAIT_SECONDS)`` (default
0.05) on the app's pool and answers a small JSON body: an I/O-bound request,
where the worker only waits. The production app has no such route; this
module adds it for the benchmark, served as ``GUNICORN_WSGI_APP=io_app:app``
with this directory on PYTHONPATH and ``BENCH_PACKAGE`` naming the package.
"""

from __future__ import annotations

import importlib
import os

from sqlalchemy import text

package = os.environ["BENCH_PACKAGE"]
create_app = importlib.import_module(package).create_app
db = importlib.import_module(f"{package}.extensions").db
WAIT_SECONDS = float(os.environ.get("BENCH_WAIT_SECONDS", "0.05"))

app = create_app()


@app.get("/bench/wait")
def wait_in_postgresql() -> dict[str, float]:
    db.session.execute(text("SELECT pg_sleep(:seconds)"), {"seconds": WAIT_SECONDS})
    return {"waited": WAIT_SECONDS}

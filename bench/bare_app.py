"""The baseline of bench/json_get.py: a bare ``Flask(__name__)`` app that
does the same work as the project's ``GET /api/events?limit=N`` and no more.

Same database work: the project's own ``services.list_events(owner_id,
limit=N)`` (the same ORM model, owner-scoped query and session) for the
account the benchmark seeded, whose id ``BENCH_OWNER_ID`` gives, on an
engine with the same pool settings. Same answer: the same JSON bytes
(compact, exact decimals, ISO 8601 datetimes), which the benchmark checks.
Left out is what the benchmark measures: authentication (the app finds
the account from the bearer token; this app ignores the header), request
ids, security headers, ProxyFix, query validation, problem responses,
logging setup and the rest of ``create_app``.

Served by gunicorn with the project's deploy/gunicorn.conf.py:
``GUNICORN_WSGI_APP=bare_app:app`` with this directory on PYTHONPATH,
``BENCH_PACKAGE`` naming the project's package and ``BENCH_OWNER_ID`` the
account.
"""

from __future__ import annotations

import importlib
import json
import os
from datetime import date, datetime
from typing import Any

from flask import Flask, Response, request

package = os.environ["BENCH_PACKAGE"]
config = importlib.import_module(f"{package}.config")
db = importlib.import_module(f"{package}.extensions").db
services = importlib.import_module(f"{package}.events.services")
# The fields the app's response model writes, in its order.
FIELDS = list(
    importlib.import_module(f"{package}.events.schemas").EventOut.model_fields
)
owner_id = int(os.environ["BENCH_OWNER_ID"])

app = Flask(__name__)
url = config.normalize_database_url(os.environ["DATABASE_URL"])
app.config["SQLALCHEMY_DATABASE_URI"] = url
# The pool and timeouts the app's settings give, from the same environment.
app.config["SQLALCHEMY_ENGINE_OPTIONS"] = config.engine_options(
    url, config.load_settings()
)
db.init_app(app)
# The same connections: the answer timeout among the engine options is the
# project's own connect argument, which database.py takes out (psycopg
# would refuse it).
importlib.import_module(f"{package}.database").init_app(app)


def plain(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)  # Decimal, UUID


@app.get("/api/events")
def index() -> Response:
    page = services.list_events(owner_id, limit=int(request.args.get("limit", "50")))
    body = {
        "items": [
            {name: getattr(event, name) for name in FIELDS} for event in page.items
        ],
        "next_cursor": page.next_cursor.encode() if page.next_cursor else None,
    }
    text = json.dumps(body, default=plain, separators=(",", ":"))
    return Response(text, mimetype="application/json")


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}

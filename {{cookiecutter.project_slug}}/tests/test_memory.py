"""Thousands of requests leave memory where it was.

After a warm-up (caches filled, first-use imports done), 2000 requests of
every kind (create, list, get, both exports, 404, 400, 401) run in this
process under tracemalloc. What they leave allocated must stay below
``BOUND_BYTES``. Measured growth is 20-55 KB on SQLite and PostgreSQL,
the same after 4000 requests: bounded caches churning. A leak of one small
object per request (about 150 bytes, two thousand times) leaves over
300 KB, as the planted leak below shows.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import pytest
from flask import Flask, request
from flask.testing import FlaskClient

from memory_check import Growth, assert_growth_below, growth_between, snapshot

WARM_UP_ROUNDS = 40
# On PostgreSQL an NDJSON export declares a server-side cursor of a new
# name each time, a new statement to psycopg: its statement cache (128 per
# process) is full only after that many.
WARM_UP_EXPORTS = 150
ROUNDS = 250
REQUESTS_PER_ROUND = 8
REQUESTS = ROUNDS * REQUESTS_PER_ROUND
BOUND_BYTES = 128 * 1024
MISSING_EVENT = "/api/events/00000000-0000-4000-8000-000000000000"


def one_round(client: FlaskClient, anonymous: FlaskClient, n: int) -> None:
    """One request of each kind, each answered as expected."""
    created = client.post(
        "/api/events", json={"kind": "sale", "amount": f"{n % 100}.25"}
    )
    assert created.status_code == 201, created.data
    location = created.headers["Location"]
    assert client.get(location).status_code == 200
    assert client.get("/api/events?limit=5&kind=sale").status_code == 200
    # The exports stream a fixed set: a growing one would only cost time.
    for export in ("export.csv", "export.ndjson"):
        response = client.get(f"/api/events/{export}?kind=fixed")
        assert response.status_code == 200
        assert response.get_data().count(b"fixed") == 20
    assert client.get(MISSING_EVENT).status_code == 404
    invalid = client.post("/api/events", json={"kind": "sale", "amount": "abc"})
    assert invalid.status_code == 400
    assert anonymous.get("/api/events").status_code == 401


def growth_over_requests(app: Flask) -> Growth:
    client = app.test_client()
    anonymous = app.test_client(token=None)
    for n in range(20):
        client.post("/api/events", json={"kind": "fixed", "amount": f"{n}.00"})
    # Traced from the warm-up on: what a bounded cache evicts later was
    # allocated under tracing too, so churn nets out instead of counting.
    tracemalloc.start()
    try:
        for n in range(WARM_UP_ROUNDS):
            one_round(client, anonymous, n)
        for _ in range(WARM_UP_EXPORTS):
            client.get("/api/events/export.ndjson?kind=fixed").get_data()
        before = snapshot()
        for n in range(ROUNDS):
            one_round(client, anonymous, n)
        return growth_between(before, snapshot())
    finally:
        tracemalloc.stop()


@pytest.fixture
def make_measured_app(make_app: Callable[..., Flask]) -> Callable[[], Flask]:
    """An app whose rate limits are off: the in-memory store keeps an entry
    per counted request for the length of its window, growth by design."""
    return lambda: make_app(RATELIMIT_ENABLED=False)


def test_requests_leave_memory_where_it_was(
    make_measured_app: Callable[[], Flask],
) -> None:
    growth = growth_over_requests(make_measured_app())
    print(f"{REQUESTS} requests: {growth.bytes} bytes\n{growth.report()}")
    assert_growth_below(growth, BOUND_BYTES, f"{REQUESTS} requests")


def test_the_check_catches_a_leak_of_one_small_object_per_request(
    make_measured_app: Callable[[], Flask],
) -> None:
    app = make_measured_app()
    leaked: list[tuple[str, str]] = []

    @app.before_request
    def leak() -> None:
        leaked.append((request.method, request.path))  # about 150 bytes

    growth = growth_over_requests(app)
    print(f"{REQUESTS} requests, leaking: {growth.bytes} bytes\n{growth.report()}")
    with pytest.raises(AssertionError, match="top allocation sites by line"):
        assert_growth_below(growth, BOUND_BYTES, f"{REQUESTS} requests")
    assert len(leaked) > REQUESTS

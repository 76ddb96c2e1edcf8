"""The events API: validated create, JSON 404, keyset pagination, each
account seeing its own events."""

from __future__ import annotations

import base64
import threading
from datetime import datetime
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient

from support import account_id, issue_token, problem_of

VALID = {"kind": "purchase", "amount": "19.99", "payload": "hello"}
# A well-formed cursor whose time is past year 9999 once in UTC.
OVERFLOWING_CURSOR = base64.urlsafe_b64encode(
    b"9999-12-31T23:59:59-23:59|" + b"0" * 32
).decode()


def create(client: FlaskClient, **fields: object) -> dict:
    response = client.post("/api/events", json={**VALID, **fields})
    assert response.status_code == 201, response.data
    return response.get_json()


def test_create_returns_the_event_with_exact_types(
    app: Flask, client: FlaskClient
) -> None:
    response = client.post(
        "/api/events",
        json={**VALID, "occurred_at": "2026-03-01T12:00:00+02:00"},
    )
    assert response.status_code == 201
    body = response.get_json()
    assert response.headers["Location"] == f"/api/events/{body['id']}"
    assert body["owner_id"] == account_id(app)
    assert body["kind"] == "purchase"
    assert body["amount"] == "19.99"
    assert body["payload"] == "hello"
    assert body["occurred_at"] == "2026-03-01T10:00:00+00:00"
    assert datetime.fromisoformat(body["created_at"]).tzinfo is not None


def test_amount_given_as_a_json_number_stays_exact(client: FlaskClient) -> None:
    response = client.post(
        "/api/events",
        data='{"kind": "k", "amount": 9999999999.99}',
        content_type="application/json",
    )
    assert response.status_code == 201
    assert response.get_json()["amount"] == "9999999999.99"


def test_get_returns_what_was_stored(client: FlaskClient) -> None:
    created = create(client, amount="0.10")
    fetched = client.get(f"/api/events/{created['id']}")
    assert fetched.status_code == 200
    assert fetched.get_json() == created
    assert Decimal(fetched.get_json()["amount"]) == Decimal("0.10")


def test_get_unknown_event_is_a_json_404(client: FlaskClient) -> None:
    response = client.get("/api/events/00000000-0000-4000-8000-000000000000")
    assert response.status_code == 404
    assert "No event" in problem_of(response)["detail"]


def test_get_with_a_malformed_id_is_a_json_404(client: FlaskClient) -> None:
    response = client.get("/api/events/not-a-uuid")
    assert response.status_code == 404
    problem_of(response)


@pytest.mark.parametrize(
    ("body", "bad_fields"),
    [
        ({}, {"kind", "amount"}),
        # The owner is the caller's account: a body cannot name one.
        ({**VALID, "owner_id": 7}, {"owner_id"}),
        ({**VALID, "kind": "Not Valid!"}, {"kind"}),
        ({**VALID, "kind": "k" * 65}, {"kind"}),
        ({**VALID, "amount": "1.234"}, {"amount"}),
        ({**VALID, "amount": "12345678901.00"}, {"amount"}),
        ({**VALID, "amount": "NaN"}, {"amount"}),
        ({**VALID, "occurred_at": "2026-03-01T12:00:00"}, {"occurred_at"}),
        ({**VALID, "surprise": 1}, {"surprise"}),
        # PostgreSQL cannot store NUL: refused on every database alike.
        ({**VALID, "kind": "a\u0000b"}, {"kind"}),
        ({**VALID, "payload": "before\u0000after"}, {"payload"}),
        ({**VALID, "payload": "\u0000"}, {"payload"}),
        # Past year 9999 or before year 1000 once in UTC.
        ({**VALID, "occurred_at": "9999-12-31T23:59:59-23:59"}, {"occurred_at"}),
        ({**VALID, "occurred_at": "0001-01-01T00:00:00+14:00"}, {"occurred_at"}),
        ({**VALID, "occurred_at": "0999-12-31T23:59:59Z"}, {"occurred_at"}),
    ],
)
def test_invalid_events_get_per_field_errors(
    client: FlaskClient, body: dict, bad_fields: set[str]
) -> None:
    response = client.post("/api/events", json=body)
    assert response.status_code == 400
    problem = problem_of(response)
    assert set(problem["errors"]) == bad_fields
    assert all(problem["errors"][field] for field in bad_fields)


@pytest.mark.parametrize(
    "occurred_at",
    ["1000-01-01T00:00:00+00:00", "9999-12-31T23:59:59.999999+00:00"],
)
def test_the_edges_of_the_time_range_are_stored(
    client: FlaskClient, occurred_at: str
) -> None:
    created = create(client, occurred_at=occurred_at)
    assert created["occurred_at"] == occurred_at
    assert client.get(f"/api/events/{created['id']}").get_json() == created


@pytest.mark.parametrize("depth", [33, 5_000, 100_000])
def test_deeply_nested_json_is_a_400(client: FlaskClient, depth: int) -> None:
    body = '{"kind": "k", "amount": 1, "payload": ' + "[" * depth + "]" * depth + "}"
    response = client.post("/api/events", data=body, content_type="application/json")
    assert response.status_code == 400
    problem_of(response)


@pytest.mark.parametrize("body", ["[{}]", '"text"', "42", "null"])
def test_a_body_that_is_not_an_object_is_refused(
    client: FlaskClient, body: str
) -> None:
    response = client.post("/api/events", data=body, content_type="application/json")
    assert response.status_code == 400
    problem_of(response)


def test_list_pages_through_every_event_once_newest_first(client: FlaskClient) -> None:
    ids = [create(client, kind=f"k{n % 3}")["id"] for n in range(25)]
    seen, cursor, pages = [], None, 0
    while True:
        query = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        body = client.get("/api/events", query_string=query).get_json()
        seen += [item["id"] for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(ids))


def test_list_is_stable_under_concurrent_inserts(
    app: Flask, client: FlaskClient
) -> None:
    before = {create(client)["id"] for _ in range(30)}
    first = client.get("/api/events?limit=10").get_json()
    seen = [item["id"] for item in first["items"]]

    def insert_more() -> None:
        writer = app.test_client()
        for _ in range(20):
            create(writer, kind="late")

    writers = [threading.Thread(target=insert_more) for _ in range(3)]
    for writer in writers:
        writer.start()
    cursor = first["next_cursor"]
    while cursor:
        body = client.get("/api/events", query_string={"limit": 10, "cursor": cursor})
        page = body.get_json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
    for writer in writers:
        writer.join()

    assert len(seen) == len(set(seen)), "an event was listed twice"
    assert set(seen) == before, "an event was skipped, or a later one slipped in"


def test_each_account_lists_only_its_own_events_filtered_by_kind(
    app: Flask, client: FlaskClient
) -> None:
    other = app.test_client(token=issue_token(app, "other"))
    mine_a = create(client, kind="a")["id"]
    theirs_a = create(other, kind="a")["id"]
    create(client, kind="b")
    theirs_b = create(other, kind="b")["id"]

    only = client.get("/api/events?kind=a").get_json()["items"]
    assert [(e["id"], e["owner_id"], e["kind"]) for e in only] == [
        (mine_a, account_id(app), "a")
    ]
    everything = other.get("/api/events").get_json()["items"]
    assert [(e["id"], e["owner_id"]) for e in everything] == [
        (theirs_b, account_id(app, "other")),
        (theirs_a, account_id(app, "other")),
    ]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=Zm9vfGJhcg", "cursor"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        # Lists are of the caller's events: no owner to choose.
        ("owner_id=1", "owner_id"),
        ("sort=asc", "sort"),
        ("kind=a%00b", "kind"),
        ("cursor=%00", "cursor"),
        # A well-formed cursor whose time overflows once in UTC.
        (f"cursor={OVERFLOWING_CURSOR}", "cursor"),
    ],
)
def test_bad_list_queries_are_400(client: FlaskClient, query: str, field: str) -> None:
    response = client.get(f"/api/events?{query}")
    assert response.status_code == 400
    assert field in problem_of(response)["errors"]

"""Every piece of data belongs to an account, and no other account sees it.

A matrix: every route that takes an id, asked for the caller's own id,
another account's id and an unknown id (another account's must answer
exactly like an unknown one: no existence leak); and every list and export
route with two accounts' data present.
"""

from __future__ import annotations

import csv
import io
import json

import pytest

from support import UNKNOWN_ID, Tenant, problem_of, same_answer


def test_an_event_is_seen_by_its_account_only(tenants: tuple[Tenant, Tenant]) -> None:
    alice, bob = tenants
    own = alice.client.get(f"/api/events/{alice.events[0]}")
    assert own.status_code == 200
    assert own.get_json()["owner_id"] == alice.account_id
    same_answer(
        alice.client.get(f"/api/events/{bob.events[0]}"),
        alice.client.get(f"/api/events/{UNKNOWN_ID}"),
        bob.events[0],
    )


def test_the_owner_comes_from_the_token_never_the_body(
    tenants: tuple[Tenant, Tenant],
) -> None:
    alice, bob = tenants
    response = alice.client.post(
        "/api/events", json={"kind": "k", "amount": "1", "owner_id": bob.account_id}
    )
    assert response.status_code == 400
    assert "owner_id" in problem_of(response)["errors"]


@pytest.mark.parametrize("query", ["", "?kind=alice.k", "?limit=1"])
def test_lists_hold_the_callers_events_only(
    tenants: tuple[Tenant, Tenant], query: str
) -> None:
    alice, bob = tenants
    for tenant in (alice, bob):
        seen, url = [], f"/api/events{query}"
        while url:
            body = tenant.client.get(url).get_json()
            seen += body["items"]
            cursor = body["next_cursor"]
            url = f"/api/events?limit=1&cursor={cursor}" if cursor else ""
        if "kind=alice.k" in query and tenant is bob:
            assert seen == []
            continue
        assert {item["id"] for item in seen} == set(tenant.events)
        assert {item["owner_id"] for item in seen} == {tenant.account_id}


@pytest.mark.parametrize("extension", ["csv", "ndjson"])
def test_streaming_exports_hold_the_callers_events_only(
    tenants: tuple[Tenant, Tenant], extension: str
) -> None:
    for tenant in tenants:
        response = tenant.client.get(f"/api/events/export.{extension}")
        assert response.status_code == 200
        text = response.get_data(as_text=True)
        if extension == "csv":
            rows = list(csv.DictReader(io.StringIO(text)))
        else:
            rows = [json.loads(line) for line in text.splitlines()]
        assert {row["id"] for row in rows} == set(tenant.events)
        assert {str(row["owner_id"]) for row in rows} == {str(tenant.account_id)}


def test_an_owner_filter_from_the_client_is_refused(
    tenants: tuple[Tenant, Tenant],
) -> None:
    alice, bob = tenants
    for url in (
        f"/api/events?owner_id={bob.account_id}",
        f"/api/events/export.csv?owner_id={bob.account_id}",
    ):
        response = alice.client.get(url)
        assert response.status_code == 400
        assert "owner_id" in problem_of(response)["errors"]

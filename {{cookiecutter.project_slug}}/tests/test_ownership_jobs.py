"""Background jobs and exports belong to an account too: another account's
id answers like an unknown one, a signed download link gives its own file
only, and the work a worker does keeps the caller's account."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from flask import Flask
from itsdangerous import TimestampSigner, URLSafeTimedSerializer

from {{ cookiecutter.package_name }}.exports import files
from {{ cookiecutter.package_name }}.exports.routes import DOWNLOAD_SALT
from {{ cookiecutter.package_name }}.extensions import db
from {{ cookiecutter.package_name }}.jobs.models import Job, JobStatus
from {{ cookiecutter.package_name }}.sqltypes import utcnow

from celery_support import finished_job
from support import UNKNOWN_ID, Tenant, problem_of, same_answer, wait_for


def add_export(app: Flask, tenant: Tenant, content: bytes) -> str:
    """A finished export of ``tenant``, its file in EXPORT_DIR."""
    with app.app_context():
        job = Job(
            owner_id=tenant.account_id,
            kind="export",
            params={"format": "csv", "filters": {}},
            status=JobStatus.SUCCEEDED,
            attempts=1,
            finished_at=utcnow(),
        )
        db.session.add(job)
        db.session.commit()
        name = files.filename(job.id, "csv")
        job.result = {"format": "csv", "filename": name}
        db.session.commit()
        directory = Path(app.config["EXPORT_DIR"])
        directory.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(content)
        return str(job.id)


@pytest.mark.parametrize("route", ["/api/jobs/{id}", "/api/exports/{id}"])
def test_jobs_and_exports_are_seen_by_their_account_only(
    app: Flask, tenants: tuple[Tenant, Tenant], route: str
) -> None:
    alice, bob = tenants
    mine = add_export(app, alice, b"alice")
    theirs = add_export(app, bob, b"bob")
    own = alice.client.get(route.format(id=mine))
    assert own.status_code == 200
    assert own.get_json()["id"] == mine
    same_answer(
        alice.client.get(route.format(id=theirs)),
        alice.client.get(route.format(id=UNKNOWN_ID)),
        theirs,
    )


def test_a_signed_download_link_gives_its_own_file_without_a_token(
    app: Flask, tenants: tuple[Tenant, Tenant]
) -> None:
    alice, bob = tenants
    mine = add_export(app, alice, b"alice's rows\n")
    theirs = add_export(app, bob, b"bob's rows\n")
    link = alice.client.get(f"/api/exports/{mine}").get_json()["download_url"]
    browser = app.test_client(token=None)

    response = fetched(browser.get(link))
    assert response.status_code == 200
    assert response.data == b"alice's rows\n"

    # The same signature on another export's URL: refused, never the file.
    moved = fetched(browser.get(link.replace(mine, theirs)))
    assert moved.status_code == 403
    assert b"bob" not in moved.data
    problem_of(moved)


def fetched(response: Any) -> Any:
    """The response, read and closed (a sent file holds an open handle)."""
    response.get_data()
    response.close()
    return response


def sign(app: Flask, payload: list[Any], age: int = 0) -> str:
    """A download signature as the app makes them, made ``age`` seconds ago."""

    class Backdated(TimestampSigner):
        def get_timestamp(self) -> int:
            return super().get_timestamp() - age

    serializer = URLSafeTimedSerializer(
        app.config["SECRET_KEY"], salt=DOWNLOAD_SALT, signer=Backdated
    )
    return serializer.dumps(payload)


def test_tampered_expired_or_foreign_links_never_give_the_file(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(EXPORT_DOWNLOAD_URL_TTL_SECONDS=60)
    alice, bob = Tenant(app, "alice"), Tenant(app, "bob")
    mine = add_export(app, alice, b"alice's rows\n")
    theirs = add_export(app, bob, b"bob's rows\n")
    browser = app.test_client(token=None)
    url = f"/api/exports/{theirs}/download"

    def get(signature: str) -> Any:
        return fetched(browser.get(url, query_string={"signature": signature}))

    valid = sign(app, [theirs, bob.account_id])
    foreign = URLSafeTimedSerializer("not-the-key", salt=DOWNLOAD_SALT)
    assert get(valid).status_code == 200
    cases = {
        "none": (browser.get(url), 403),
        "tampered": (get(valid[:-2] + ("AA" if valid[-2:] != "AA" else "BB")), 403),
        "expired": (get(sign(app, [theirs, bob.account_id], age=120)), 403),
        "another export": (get(sign(app, [mine, bob.account_id])), 403),
        "another key": (get(foreign.dumps([theirs, bob.account_id])), 403),
        "another account": (get(sign(app, [theirs, alice.account_id])), 404),
        "junk": (get("x" * 5000), 403),
    }
    for case, (response, status) in cases.items():
        assert response.status_code == status, case
        assert b"bob's rows" not in response.data, case
        problem_of(response)


def test_a_link_to_another_accounts_export_answers_like_an_unknown_one(
    app: Flask, tenants: tuple[Tenant, Tenant]
) -> None:
    """Signed for the caller's own account, on another account's export id."""
    alice, bob = tenants
    theirs = add_export(app, bob, b"bob's rows\n")
    browser = app.test_client(token=None)

    def download(export_id: str) -> Any:
        signature = sign(app, [export_id, alice.account_id])
        return fetched(
            browser.get(
                f"/api/exports/{export_id}/download",
                query_string={"signature": signature},
            )
        )

    same_answer(download(theirs), download(UNKNOWN_ID), theirs)


def test_x_accel_downloads_use_the_signed_link_too(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(EXPORT_X_ACCEL=True)
    alice = Tenant(app, "alice")
    mine = add_export(app, alice, b"rows\n")
    link = alice.client.get(f"/api/exports/{mine}").get_json()["download_url"]
    response = app.test_client(token=None).get(link)
    assert response.status_code == 200
    assert response.headers["X-Accel-Redirect"].endswith(files.filename(mine, "csv"))
    assert response.data == b""


@pytest.fixture
def worker_app(
    make_app: Callable[..., Flask], celery_env: dict[str, str]
) -> Iterator[Flask]:
    """An app whose tasks a real worker thread runs, through Redis."""
    app = make_app()
    with start_worker(app.extensions["celery"], pool="solo", perform_ping_check=False):
        yield app


def test_background_work_keeps_the_callers_account(worker_app: Flask) -> None:
    alice, bob = Tenant(worker_app, "alice"), Tenant(worker_app, "bob")

    started = alice.client.post("/api/exports", json={"format": "ndjson"})
    assert started.status_code == 202, started.data
    url = started.get_json()["status_url"]
    done = wait_for(lambda: finished_job(alice.client, url), what="the export")
    assert done["status"] == "succeeded", done
    lines = fetched(alice.client.get(done["download_url"])).get_data(as_text=True)
    assert {json.loads(line)["id"] for line in lines.splitlines()} == set(alice.events)

    summary = bob.client.post("/api/jobs/owner-summaries")
    assert summary.status_code == 202, summary.data
    url = summary.get_json()["status_url"]
    done = wait_for(lambda: finished_job(bob.client, url), what="the summary")
    assert done["status"] == "succeeded", done
    assert done["result"]["events"] == len(bob.events)
    assert done["result"]["total"] == "4.50"  # 0.50 + 1.50 + 2.50
    summary_event = bob.client.get(f"/api/events/{done['result']['summary_event_id']}")
    assert summary_event.get_json()["owner_id"] == bob.account_id
    # Alice's status of Bob's job: as unknown as any other id.
    assert alice.client.get(url).status_code == 404
    assert uuid.UUID(done["id"])

"""Bearer tokens: how they look, how they are stored, and who gets in."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
import sentry_sdk
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from {{ cookiecutter.package_name }}.accounts import Scope, require, services, tokens
from {{ cookiecutter.package_name }}.accounts.models import ApiToken
from {{ cookiecutter.package_name }}.extensions import db
from {{ cookiecutter.package_name }}.sqltypes import utcnow

from support import (
    DEFAULT_ACCOUNT,
    UNKNOWN_ID,
    CapturingTransport,
    issue_token,
    problem_of,
)

# Routes a client may reach without a bearer token (a signed link instead).
SIGNED_LINK_ENDPOINTS = {"exports.download"}
# The API's description (test_openapi.py): public, it holds no data.
DOCUMENTATION_BLUEPRINTS = {"openapi", "apidocs"}


def api_rules(app: Flask) -> list[tuple[str, str, str]]:
    """(endpoint, method, path) of every /api rule, with sample arguments."""
    found = []
    for rule in app.url_map.iter_rules():
        blueprint = rule.endpoint.partition(".")[0]
        if not rule.rule.startswith("/api/") or blueprint in DOCUMENTATION_BLUEPRINTS:
            continue
        path = rule.rule
        for argument in rule.arguments:
            path = path.replace(f"<uuid:{argument}>", UNKNOWN_ID)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            found.append((rule.endpoint, method, path))
    return found


def test_tokens_are_prefixed_random_and_checksummed() -> None:
    first, second = tokens.generate(), tokens.generate()
    assert first != second
    assert first.startswith("{{ cookiecutter.package_name }}_pat_")
    assert len(first) == tokens.LENGTH
    assert tokens.well_formed(first)
    # One changed character breaks the checksum: rejected before any lookup.
    flipped = first[:-8] + ("a" if first[-8] != "a" else "b") + first[-7:]
    assert not tokens.well_formed(flipped)
    assert not tokens.well_formed(first + "x")
    assert not tokens.well_formed("")


def test_only_a_digest_of_the_token_is_stored(app: Flask) -> None:
    secret = issue_token(app)
    with app.app_context():
        stored = db.session.scalars(select(ApiToken)).one()
        columns = [str(getattr(stored, c.key)) for c in ApiToken.__table__.columns]
    assert tokens.digest(secret) in columns
    assert all(secret not in value for value in columns)


def test_every_api_route_refuses_a_request_without_a_token(app: Flask) -> None:
    anonymous = app.test_client(token=None)
    rules = api_rules(app)
    assert len(rules) >= 4, rules
    for endpoint, method, path in rules:
        response = anonymous.open(path, method=method, json={})
        if endpoint in SIGNED_LINK_ENDPOINTS:
            assert response.status_code == 403, (endpoint, response.data)
            problem_of(response)
            continue
        assert response.status_code == 401, (endpoint, method, response.data)
        assert problem_of(response)["title"] == "Unauthorized"
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'


def test_health_probes_stay_open(app: Flask) -> None:
    anonymous = app.test_client(token=None)
    assert anonymous.get("/healthz").status_code == 200
    assert anonymous.get("/readyz").status_code == 200


def stored(app: Flask, secret: str) -> ApiToken:
    """The database row of ``secret``, detached: its columns stay readable."""
    with app.app_context():
        token = db.session.scalars(
            select(ApiToken).where(ApiToken.token_hash == tokens.digest(secret))
        ).one()
        db.session.expunge(token)
        return token


def _expired(app: Flask) -> str:
    secret = issue_token(app, "expiring")
    with app.app_context():
        db.session.execute(
            update(ApiToken)
            .where(ApiToken.token_hash == tokens.digest(secret))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        db.session.commit()
    return secret


def _revoked(app: Flask) -> str:
    secret = issue_token(app, "revoking")
    token_id = stored(app, secret).id
    with app.app_context():
        assert services.revoke_token(token_id)
    return secret


def _bad_checksum(token: str) -> str:
    """``token`` with its last character changed, whatever that was."""
    return token[:-1] + ("1" if token.endswith("0") else "0")


BAD_CREDENTIALS: dict[str, Callable[[Flask], str]] = {
    "empty bearer": lambda app: "Bearer",
    "basic scheme": lambda app: "Basic dXNlcjpwYXNz",
    "not a token": lambda app: "Bearer not-a-token",
    "unknown token": lambda app: f"Bearer {tokens.generate()}",
    "bad checksum": lambda app: f"Bearer {_bad_checksum(issue_token(app))}",
    "expired token": lambda app: f"Bearer {_expired(app)}",
    "revoked token": lambda app: f"Bearer {_revoked(app)}",
    "huge header": lambda app: "Bearer " + "x" * 6000,
    "non-ascii": lambda app: "Bearer t\u00f6ken",
    "two tokens": lambda app: f"Bearer {issue_token(app)} {issue_token(app)}",
}


@pytest.mark.parametrize("case", sorted(BAD_CREDENTIALS))
def test_bad_credentials_are_401_problems_never_5xx(app: Flask, case: str) -> None:
    header = BAD_CREDENTIALS[case](app)
    client = app.test_client(token=None)
    response = client.get("/api/events", headers={"Authorization": header})
    assert response.status_code == 401
    body = problem_of(response)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # The same answer whatever was wrong: nothing sent comes back.
    assert body["detail"] == (
        "A valid bearer token is required: Authorization: Bearer."
    )


def test_a_token_without_the_scope_is_403(app: Flask) -> None:
    reader = app.test_client(token=issue_token(app, scopes=("read",)))
    writer = app.test_client(token=issue_token(app, scopes=("write",)))
    body = {"kind": "purchase", "amount": "1.00"}

    refused = reader.post("/api/events", json=body)
    assert refused.status_code == 403
    problem_of(refused)
    assert "insufficient_scope" in refused.headers["WWW-Authenticate"]
    assert writer.post("/api/events", json=body).status_code == 201

    assert reader.get("/api/events").status_code == 200
    assert writer.get("/api/events").status_code == 403


def test_last_used_is_recorded_without_a_write_per_request(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(TOKEN_LAST_USED_RESOLUTION_SECONDS=3600)
    secret = issue_token(app)
    client = app.test_client(token=secret)

    def last_used() -> object:
        return stored(app, secret).last_used_at

    assert last_used() is None
    assert client.get("/api/events").status_code == 200
    first = last_used()
    assert first is not None
    assert client.get("/api/events").status_code == 200
    assert last_used() == first


def test_log_lines_carry_the_caller_and_never_the_token(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    secret = issue_token(app)
    client = app.test_client(token=secret)

    @app.get("/api/log-probe")
    @require(Scope.READ)
    def log_probe() -> dict[str, str]:
        logging.getLogger("probe").warning("inside an authenticated request")
        return {}

    with caplog.at_level(logging.INFO):
        assert client.get("/api/log-probe").status_code == 200
    record = next(r for r in caplog.records if r.name == "probe")
    token = stored(app, secret)
    assert record.account_id == str(token.account_id)
    assert record.token_id == str(token.id)
    assert all(secret not in r.getMessage() for r in caplog.records)
    assert all(tokens.digest(secret) not in r.getMessage() for r in caplog.records)
    # After the request, records are anonymous again.
    logging.getLogger("probe").warning("outside")
    assert caplog.records[-1].account_id == "-"


def test_cli_creates_accounts_and_issues_lists_and_revokes_tokens(app: Flask) -> None:
    runner = app.test_cli_runner()
    created = runner.invoke(args=["accounts", "create", "cli-user"])
    assert created.exit_code == 0, created.output
    again = runner.invoke(args=["accounts", "create", "cli-user"])
    assert again.exit_code == 1
    assert "exists already" in again.output
    assert (
        runner.invoke(args=["accounts", "create", "cli-user", "--exist-ok"]).exit_code
        == 0
    )

    issued = runner.invoke(
        args=["tokens", "issue", "cli-user", "--scope", "read", "--expires-in", "1d"]
    )
    assert issued.exit_code == 0, issued.output
    secret = issued.stdout.strip().splitlines()[-1]
    assert tokens.well_formed(secret)
    client = app.test_client(token=secret)
    assert client.get("/api/events").status_code == 200
    assert (
        client.post("/api/events", json={"kind": "k", "amount": "1"}).status_code == 403
    )

    listed = runner.invoke(args=["tokens", "list", "cli-user"])
    assert listed.exit_code == 0
    assert "scopes=read" in listed.output
    assert "active" in listed.output
    assert secret not in listed.output
    assert tokens.digest(secret) not in listed.output
    token_id = listed.output.split()[0]

    revoked = runner.invoke(args=["tokens", "revoke", token_id])
    assert revoked.exit_code == 0, revoked.output
    assert client.get("/api/events").status_code == 401
    assert "revoked" in runner.invoke(args=["tokens", "list", "cli-user"]).output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tokens", "issue", "nobody", "--scope", "read"], "no account named"),
        (["tokens", "issue", DEFAULT_ACCOUNT, "--scope", "admin"], "admin"),
        (["tokens", "issue", DEFAULT_ACCOUNT], "--scope"),
        (
            [
                "tokens",
                "issue",
                DEFAULT_ACCOUNT,
                "--scope",
                "read",
                "--expires-in",
                "soon",
            ],
            "--expires-in",
        ),
        (["tokens", "revoke", "not-a-uuid"], "TOKEN_ID"),
        (["tokens", "revoke", "00000000-0000-4000-8000-000000000000"], "no token"),
        (["tokens", "list", "nobody"], "no account named"),
    ],
)
def test_cli_mistakes_are_clear_errors(
    app: Flask, args: list[str], message: str
) -> None:
    issue_token(app)  # the default account exists
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_token_printed_by_the_cli_is_alone_on_the_last_line(app: Flask) -> None:
    issue_token(app)
    result = app.test_cli_runner().invoke(
        args=["tokens", "issue", DEFAULT_ACCOUNT, "--scope", "read", "--scope", "write"]
    )
    assert result.exit_code == 0
    assert tokens.well_formed(result.stdout.splitlines()[-1])
    # The explanation goes to stderr, so `| tail -n 1` is the token alone.
    assert result.stdout.strip().count("\n") == 0


def test_the_suites_default_client_is_authenticated(client: FlaskClient) -> None:
    assert client.get("/api/events").status_code == 200


def test_sentry_events_name_the_caller_and_never_the_token(
    make_app: Callable[..., Flask], sentry_transport: CapturingTransport
) -> None:
    app = make_app(
        SENTRY_DSN="https://public@sentry.example.invalid/1",
        SENTRY_TRANSPORT=sentry_transport,
    )

    @app.get("/api/boom")
    @require(Scope.READ)
    def boom() -> str:
        raise RuntimeError("exploded on purpose")

    secret = issue_token(app)
    response = app.test_client(token=secret).get("/api/boom")
    assert response.status_code == 500
    sentry_sdk.flush()
    (event,) = sentry_transport.events()
    token = stored(app, secret)
    assert event["tags"]["account_id"] == str(token.account_id)
    assert event["tags"]["token_id"] == str(token.id)
    sent = json.dumps(event, default=str)
    assert secret not in sent
    assert tokens.digest(secret) not in sent


def test_a_verified_token_is_trusted_for_the_cache_time_then_looked_up(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app(TOKEN_CACHE_SECONDS=1)
    secret = issue_token(app)
    client = app.test_client(token=secret)
    assert client.get("/api/events").status_code == 200
    token_id = stored(app, secret).id
    with app.app_context():
        services.revoke_token(token_id)
    # Within the cache time this process still trusts it ...
    assert client.get("/api/events").status_code == 200
    time.sleep(1.1)
    # ... and then asks the database again.
    assert client.get("/api/events").status_code == 401


def test_the_cache_checks_expiry_on_every_hit() -> None:
    cache = services.VerifiedTokens(seconds=60)
    secret = tokens.generate()
    now = utcnow()
    identity = services.Identity(
        account_id=1,
        token_id=uuid.uuid4(),
        scopes=frozenset({"read"}),
        expires_at=now + timedelta(seconds=10),
    )
    cache.put(secret, identity)
    assert cache.get(secret, now) == identity
    assert cache.get(secret, now + timedelta(seconds=11)) is None
    assert cache.get(tokens.generate(), now) is None
    assert secret not in repr(cache.__dict__)

"""Abuse limits on /api/: failed authentications per client address and
requests per token, on each storage the app can count in. A storage that
cannot be reached never turns a request into a 500."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from {{ cookiecutter.package_name }}.accounts import tokens
from {{ cookiecutter.package_name }}.config import ConfigError, load_settings
from {{ cookiecutter.package_name }}.http import limits as abuse_limits
from {{ cookiecutter.package_name }}.http.limits import limits_of
from {{ cookiecutter.package_name }}.http.request_id import HEADER as REQUEST_ID
from {{ cookiecutter.package_name }}.http.security import HEADERS as SECURITY_HEADERS

from support import issue_token, problem_of

ATTACKER = "203.0.113.7"
BYSTANDER = "198.51.100.20"


@dataclass
class Storage:
    """Where an app counts: ``overrides`` for make_app, the storage class
    and, for a shared one, the keys counted there (checked, so a test cannot
    pass on the wrong storage)."""

    kind: str
    overrides: dict[str, Any]
    keys: Callable[[], list[str]] = field(default=lambda: [])
    shared: bool = False

    def check_counted_in(self, app: Flask) -> None:
        limits = limits_of(app)
        assert limits is not None
        assert type(limits.storage).__name__ == self.kind
        if self.shared:
            assert self.keys(), "nothing was counted in the shared storage"


@pytest.fixture(params=["memory"{% if cookiecutter.use_celery == "y" %}, "redis"{% endif %}])
def storage(request: pytest.FixtureRequest) -> Storage:
{%- if cookiecutter.use_celery == "y" %}
    if request.param == "redis":
        from redis import Redis

        # The session's real Redis (REDIS_URL) and a key prefix of this
        # test's own, as in production.
        env = request.getfixturevalue("celery_env")
        url, prefix = env["REDIS_URL"], env["RATELIMIT_KEY_PREFIX"]

        def keys() -> list[str]:
            with Redis.from_url(url, decode_responses=True) as client:
                return list(client.scan_iter(f"{prefix}*"))

        return Storage("RedisStorage", {}, keys=keys, shared=True)
{%- endif %}
    return Storage("MemoryStorage", {"RATELIMIT_STORAGE_URI": "memory://"})


def from_address(address: str, **headers: str) -> dict[str, Any]:
    """Request arguments for a client at ``address`` behind one proxy
    (PROXY_HOPS=1): the proxy appends the address it saw."""
    forwarded = headers.pop("X-Forwarded-For", None)
    chain = f"{forwarded}, {address}" if forwarded else address
    return {"headers": {"X-Forwarded-For": chain, **headers}}


def check_too_many(response: TestResponse, detail: str) -> None:
    """A 429 problem with Retry-After, request id and security headers."""
    assert response.status_code == 429, response.data
    body = problem_of(response)
    assert detail in body["detail"]
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert body["request_id"] == response.headers[REQUEST_ID]
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value


def test_failed_authentications_from_one_address_get_429(
    make_app: Callable[..., Flask], storage: Storage
) -> None:
    app = make_app(
        PROXY_HOPS=1, RATELIMIT_FAILED_AUTH="3 per minute", **storage.overrides
    )
    anonymous = app.test_client(token=None)
    guesser = app.test_client(token="not-a-real-token")  # noqa: S106
    for client in (anonymous, anonymous, guesser):
        assert client.get("/api/events", **from_address(ATTACKER)).status_code == 401

    check_too_many(
        anonymous.get("/api/events", **from_address(ATTACKER)),
        "failed authentications",
    )
    # Over the limit, the address waits for every guess, a well-formed one
    # included, while a caller there with a valid token is served.
    check_too_many(
        app.test_client(token=tokens.generate()).get(
            "/api/events", **from_address(ATTACKER)
        ),
        "failed authentications",
    )
    served = app.test_client().get("/api/events", **from_address(ATTACKER))
    assert served.status_code == 200
    # Another address is not affected.
    assert anonymous.get("/api/events", **from_address(BYSTANDER)).status_code == 401
    good = app.test_client().get("/api/events", **from_address(BYSTANDER))
    assert good.status_code == 200
    storage.check_counted_in(app)


def test_a_forged_forwarded_for_does_not_escape_the_limit(
    make_app: Callable[..., Flask], storage: Storage
) -> None:
    app = make_app(
        PROXY_HOPS=1, RATELIMIT_FAILED_AUTH="2 per minute", **storage.overrides
    )
    client = app.test_client(token=None)
    # The client writes its own X-Forwarded-For; nginx appends the real address.
    forged = [
        from_address(ATTACKER, **{"X-Forwarded-For": f"10.0.0.{n}"}) for n in range(4)
    ]
    answers = [client.get("/api/events", **forged[n]).status_code for n in range(4)]
    assert answers == [401, 401, 429, 429]


def test_without_a_trusted_proxy_forwarded_for_is_ignored(
    make_app: Callable[..., Flask], storage: Storage
) -> None:
    app = make_app(
        PROXY_HOPS=0, RATELIMIT_FAILED_AUTH="2 per minute", **storage.overrides
    )
    client = app.test_client(token=None)

    def status(remote_addr: str, forwarded: str) -> int:
        return client.get(
            "/api/events",
            headers={"X-Forwarded-For": forwarded},
            environ_base={"REMOTE_ADDR": remote_addr},
        ).status_code

    assert [status(ATTACKER, f"10.0.0.{n}") for n in range(3)] == [401, 401, 429]
    assert status(BYSTANDER, ATTACKER) == 401


def test_only_failed_authentications_count(make_app: Callable[..., Flask]) -> None:
    app = make_app(RATELIMIT_FAILED_AUTH="2 per minute")
    good = app.test_client()
    read_only = app.test_client(token=issue_token(app, scopes=("read",)))
    for _ in range(5):
        assert good.get("/api/events").status_code == 200
        # A valid token without the scope is a 403: the caller is known.
        assert read_only.post("/api/events", json={}).status_code == 403
        assert good.get("/api/no-such-route").status_code == 404
    anonymous = app.test_client(token=None)
    assert [anonymous.get("/api/events").status_code for _ in range(3)] == [
        401,
        401,
        429,
    ]


def test_requests_per_token(make_app: Callable[..., Flask], storage: Storage) -> None:
    app = make_app(**{"RATELIMIT_PER_TOKEN": "3 per minute"}, **storage.overrides)
    busy = app.test_client()
    for _ in range(3):
        assert busy.get("/api/events").status_code == 200
    check_too_many(busy.get("/api/events"), "with this token")
    check_too_many(busy.post("/api/events", json={}), "with this token")

    # Another token from the same address has its own budget, and callers
    # without a token are not held to any token's.
    other = app.test_client(token=issue_token(app, account="other"))
    assert other.get("/api/events").status_code == 200
    assert app.test_client(token=None).get("/api/events").status_code == 401
    storage.check_counted_in(app)


def test_counts_are_shared_between_processes_only_through_redis(
    make_app: Callable[..., Flask], storage: Storage
) -> None:
    settings = {"RATELIMIT_FAILED_AUTH": "2 per minute", **storage.overrides}
    first, second = make_app(**settings), make_app(**settings)
    for _ in range(2):
        assert first.test_client(token=None).get("/api/events").status_code == 401
    # The second app is another gunicorn worker (or replica) of the service.
    answer = second.test_client(token=None).get("/api/events").status_code
    assert answer == (429 if storage.shared else 401)


def test_probes_and_metrics_are_never_limited(make_app: Callable[..., Flask]) -> None:
    app = make_app(
        **{
            "RATELIMIT_FAILED_AUTH": "1 per minute",
            "RATELIMIT_PER_TOKEN": "1 per minute",
        }
    )
    client = app.test_client(token=None)
    assert client.get("/api/events").status_code == 401
    assert client.get("/api/events").status_code == 429
    with_token = app.test_client()
    for _ in range(3):
        for path in ("/healthz", "/readyz", "/metrics"):
            assert client.get(path).status_code == 200, path
            assert with_token.get(path).status_code == 200, path


def test_storage_errors_never_become_500s(
    make_app: Callable[..., Flask],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_app(
        RATELIMIT_STORAGE_URI="memory://", RATELIMIT_FAILED_AUTH="2 per minute"
    )
    limits = limits_of(app)
    assert limits is not None

    def refuse(*_args: Any, **_kwargs: Any) -> int:
        raise ConnectionError("storage down")

    monkeypatch.setattr(limits.storage, "incr", refuse)
    caplog.set_level(logging.INFO)
    client = app.test_client()
    assert [client.get("/api/events").status_code for _ in range(3)] == [200] * 3
    # Once per outage, not once per request.
    assert caplog.text.count("Rate limit storage unreachable") == 1
    assert "ConnectionError" in caplog.text
    # Counted in this process meanwhile: the limits still hold.
    anonymous = app.test_client(token=None)
    assert [anonymous.get("/api/events").status_code for _ in range(3)] == [
        401,
        401,
        429,
    ]


def test_the_storage_is_asked_again_after_a_pause(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(
        **{"RATELIMIT_STORAGE_URI": "memory://", "RATELIMIT_PER_TOKEN": "3 per minute"}
    )
    limits = limits_of(app)
    assert limits is not None
    monkeypatch.setattr(abuse_limits, "STORAGE_RETRY_SECONDS", 0.3)
    incr = limits.storage.incr
    down = True

    def flaky(*args: Any, **kwargs: Any) -> int:
        if down:
            raise ConnectionError("storage down")
        return incr(*args, **kwargs)

    monkeypatch.setattr(limits.storage, "incr", flaky)
    client = app.test_client()
    assert client.get("/api/events").status_code == 200  # counted in memory
    down = False
    assert client.get("/api/events").status_code == 200  # still in memory
    time.sleep(0.4)
    # Back to the storage, where this token has no count yet: three more
    # (in memory it would be over after one), then the limit.
    assert [client.get("/api/events").status_code for _ in range(4)] == [
        200,
        200,
        200,
        429,
    ]


def test_limits_can_be_turned_off(make_app: Callable[..., Flask]) -> None:
    app = make_app(RATELIMIT_ENABLED=False, RATELIMIT_FAILED_AUTH="1 per minute")
    assert limits_of(app) is None
    client = app.test_client(token=None)
    assert {client.get("/api/events").status_code for _ in range(3)} == {401}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("RATELIMIT_FAILED_AUTH", "lots"),
        ("RATELIMIT_PER_TOKEN", "1200 per fortnight"),
        ("RATELIMIT_STORAGE_URI", "nosuchstore://127.0.0.1"),
    ],
)
def test_unusable_limit_settings_are_refused_by_name(
    make_app: Callable[..., Flask],
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    value: str,
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        make_app()


def test_defaults() -> None:
    settings = vars(load_settings("testing"))
    assert {
        name: settings[name]
        for name in (
            "RATELIMIT_ENABLED",
            "RATELIMIT_FAILED_AUTH",
            "RATELIMIT_PER_TOKEN",
            "RATELIMIT_STORAGE_URI",
        )
    } == {
        "RATELIMIT_ENABLED": True,
        "RATELIMIT_FAILED_AUTH": "10 per minute",
        "RATELIMIT_PER_TOKEN": "1200 per minute",
        "RATELIMIT_STORAGE_URI": "memory://",
    }

"""Abuse limits counted in Redis: where the counts go, and a Redis that
cannot be reached, which never turns a request into a 500."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from {{ cookiecutter.package_name }}.config import load_settings
from {{ cookiecutter.package_name }}.http.limits import BATCH_DIVISOR, limits_of

from support import free_port, issue_token


def test_unreachable_redis_serves_requests(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(
        RATELIMIT_STORAGE_URI=f"redis://127.0.0.1:{free_port()}/0",
        RATELIMIT_FAILED_AUTH="2 per minute",
    )
    client, anonymous = app.test_client(), app.test_client(token=None)
    assert [client.get("/api/events").status_code for _ in range(3)] == [200] * 3
    assert client.post("/api/events", json={"kind": "x"}).status_code == 400
    # Counted in this process meanwhile: the limits still hold.
    assert [anonymous.get("/api/events").status_code for _ in range(3)] == [
        401,
        401,
        429,
    ]
    assert "Rate limit storage unreachable" in caplog.text


def test_with_redis_the_counts_go_there(
    make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_settings("testing").RATELIMIT_KEY_PREFIX == "limits"
    monkeypatch.setenv("REDIS_URL", "redis://redis.internal:6379/2")
    monkeypatch.setenv("CELERY_KEY_PREFIX", "staging:")
    app = make_app()
    assert app.config["RATELIMIT_STORAGE_URI"] == "redis://redis.internal:6379/2"
    # Under Celery's key prefix: one prefix keeps a deployment's keys apart.
    assert app.config["RATELIMIT_KEY_PREFIX"] == "staging:limits"
    options = app.config["RATELIMIT_STORAGE_OPTIONS"]
    assert options["key_prefix"] == "staging:limits"
    assert options["socket_connect_timeout"] <= 1
    assert options["socket_timeout"] <= 1
    monkeypatch.setenv("RATELIMIT_STORAGE_URI", "memory://")
    monkeypatch.setenv("RATELIMIT_KEY_PREFIX", "web-limits")
    settings = load_settings("testing")
    assert settings.RATELIMIT_STORAGE_URI == "memory://"
    assert settings.RATELIMIT_KEY_PREFIX == "web-limits"


def test_redis_is_told_in_batches_and_the_limit_holds_within_them(
    make_app: Callable[..., Flask],
    celery_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two processes of the service share a token's count in Redis. Each
    adds its hits in batches of at most 1/BATCH_DIVISOR of the headroom, so
    fewer round trips than requests, and the limit holds within one batch
    per process (the last hits before it are counted one by one)."""
    limit = 4 * BATCH_DIVISOR  # first batches of 4 hits
    apps = [make_app(**{"RATELIMIT_PER_TOKEN": f"{limit} per minute"}) for _ in "ab"]
    token = issue_token(apps[0])
    round_trips = 0
    for app in apps:
        limits = limits_of(app)
        assert limits is not None
        assert type(limits.storage).__name__ == "RedisStorage"
        incr = limits.storage.incr

        def counted(*args: Any, incr: Callable[..., int] = incr, **kwargs: Any) -> int:
            nonlocal round_trips
            round_trips += 1
            return incr(*args, **kwargs)

        monkeypatch.setattr(limits.storage, "incr", counted)
    clients = [app.test_client(token=token) for app in apps]
    served = 0
    while clients[served % 2].get("/api/events?limit=1").status_code == 200:
        served += 1
        assert served <= 2 * limit, "the limit never held"
    assert limit <= served <= limit + 2 * (limit // BATCH_DIVISOR)
    assert round_trips < served * 3 / 4
    # Over the limit, each process counts every request at once: none of
    # them is let through in a batch.
    answers = {client.get("/api/events?limit=1").status_code for client in clients * 5}
    assert answers == {429}

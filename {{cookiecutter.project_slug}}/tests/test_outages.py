"""A dependency that is away is logged once per burst, never with its SQL."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.exc import OperationalError

from {{ cookiecutter.package_name }}.outages import FAILURES, Outage, describe


def refused() -> OperationalError:
    return OperationalError(
        "SELECT secret_column FROM accounts WHERE name = %(name)s",
        {"name": "hunter2"},
        ConnectionRefusedError("connection refused\nDETAIL: more"),
    )


def test_describe_names_the_driver_error_and_drops_the_statement() -> None:
    text = describe(refused())
    assert text == "ConnectionRefusedError: connection refused"
    assert "secret_column" not in text
    assert "hunter2" not in text


def test_a_burst_is_logged_once_and_its_end_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outage = Outage("probe-db")
    before = FAILURES.labels("probe-db")._value.get()
    with caplog.at_level(logging.INFO, logger="{{ cookiecutter.package_name }}.outages"):
        for _ in range(50):
            outage.failed(refused())
        outage.answered()
        outage.answered()
    assert [r.levelno for r in caplog.records] == [logging.ERROR, logging.WARNING]
    assert "probe-db unavailable" in caplog.records[0].getMessage()
    assert "after 50 failed attempts" in caplog.records[1].getMessage()
    assert FAILURES.labels("probe-db")._value.get() - before == 50


def test_a_quiet_burst_ends_by_itself(caplog: pytest.LogCaptureFixture) -> None:
    outage = Outage("probe-queue", quiet_seconds=0)
    with caplog.at_level(logging.INFO, logger="{{ cookiecutter.package_name }}.outages"):
        outage.failed(refused())
        outage.failed(refused())
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2

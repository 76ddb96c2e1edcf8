"""Request ids: accepted when well-formed, generated otherwise, on every log line."""

from __future__ import annotations

import json
import logging
import re

import pytest
from flask import Flask
from flask.testing import FlaskClient

from {{ cookiecutter.package_name }}.logs import configure_logging, request_id_var

GENERATED = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture
def app(make_app) -> Flask:
    app = make_app()

    @app.get("/log")
    def log_something() -> dict:
        logging.getLogger("test.view").warning("inside the view")
        return {"ok": True}

    return app


def test_a_well_formed_incoming_id_is_kept(client: FlaskClient) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "abc-123_DEF.4:5"})
    assert response.headers["X-Request-ID"] == "abc-123_DEF.4:5"


@pytest.mark.parametrize(
    "bad",
    ["x" * 129, "has space", "new\\nline", "<script>", "ünïcode", ""],
)
def test_a_malformed_incoming_id_is_replaced(client: FlaskClient, bad: str) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": bad})
    assert GENERATED.match(response.headers["X-Request-ID"])


def test_each_request_without_an_id_gets_a_new_one(client: FlaskClient) -> None:
    first = client.get("/healthz").headers["X-Request-ID"]
    second = client.get("/healthz").headers["X-Request-ID"]
    assert GENERATED.match(first)
    assert first != second


def test_log_records_of_a_request_carry_its_id(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    client.get("/log", headers={"X-Request-ID": "req-log-42"})
    records = [r for r in caplog.records if r.name == "test.view"]
    assert [r.request_id for r in records] == ["req-log-42"]
    # Outside the request the id is gone again.
    assert request_id_var.get() == "-"
    logging.getLogger("test.view").warning("after the request")
    assert caplog.records[-1].request_id == "-"


def test_production_logs_are_json_lines_with_the_request_id(
    client: FlaskClient, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", json=True)
    try:
        capsys.readouterr()
        client.get("/log", headers={"X-Request-ID": "req-json-7"})
        lines = [line for line in capsys.readouterr().out.splitlines() if line]
    finally:
        configure_logging("INFO", json=False)
    records = [json.loads(line) for line in lines]
    view = [r for r in records if r["logger"] == "test.view"]
    assert view == [
        {
            "time": view[0]["time"],
            "level": "WARNING",
            "logger": "test.view",
            "message": "inside the view",
            "request_id": "req-json-7",
            # An unauthenticated route: no caller to name.
            "account_id": "-",
            "token_id": "-",
            # Untraced (tracing.py is off without an endpoint).
            "trace_id": "-",
            "span_id": "-",
        }
    ]

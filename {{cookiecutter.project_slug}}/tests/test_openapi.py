"""The API contract: the OpenAPI document is valid and complete, and the app
keeps it (schemathesis, in-process, with a real token)."""

from __future__ import annotations

import re
from collections import Counter
from importlib import metadata
from typing import Any

import pytest
import schemathesis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate
from schemathesis.specs.openapi.checks import positive_data_acceptance

from {{ cookiecutter.package_name }} import openapi
from {{ cookiecutter.package_name }}.apidocs import ASSETS, DOCS_CSP
from {{ cookiecutter.package_name }}.config import load_settings
from {{ cookiecutter.package_name }}.events.schemas import EventOut

from support import issue_token, problem_of

# Blueprints that describe the API rather than serve it.
DOCUMENTATION_BLUEPRINTS = {"openapi", "apidocs"}
HTTP_METHODS = {"get", "put", "post", "delete", "patch"}


def test_an_answer_that_breaks_its_model_is_a_logged_500_problem(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    @app.get("/broken")
    @openapi.operation("broken", ok=(200, EventOut), scope=None, tag="test")
    def broken() -> dict[str, str]:
        return {"id": "secret-internal-value"}

    response = app.test_client().get("/broken")
    assert response.status_code == 500
    problem_of(response)
    assert b"secret-internal-value" not in response.data
    assert any(
        "documented model" in str(r.exc_info[1]) for r in caplog.records if r.exc_info
    )


@pytest.fixture
def document(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/api/openapi.json", headers={"Authorization": ""})
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body: dict[str, Any] = response.get_json()
    return body


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"].startswith("3.1")
    # The project's own name and the installed version (pyproject.toml).
    project_name = {{ cookiecutter.project_name | tojson }}
    assert document["info"]["title"] == project_name
    assert document["info"]["version"] == metadata.version(openapi.SERVICE)


def test_every_api_route_is_documented(app: Flask, document: dict[str, Any]) -> None:
    documented = {(path, method) for path, method, _ in operations(document)}
    for rule in app.url_map.iter_rules():
        blueprint = rule.endpoint.partition(".")[0]
        if not rule.rule.startswith("/api/") or blueprint in DOCUMENTATION_BLUEPRINTS:
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in documented, f"{method} {path}"


def test_operation_ids_are_unique_readable_names(document: dict[str, Any]) -> None:
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) == len(set(ids))
    for operation_id in ids:
        assert re.fullmatch(r"[a-z][A-Za-z]+", operation_id), operation_id


def test_every_error_is_documented_as_a_problem(document: dict[str, Any]) -> None:
    for path, method, operation in operations(document):
        errors = {int(s): r for s, r in operation["responses"].items() if int(s) >= 400}
        # What any route can answer: the abuse limits and the app's failures;
        # and what its inputs can give.
        expected = {429, 500, 503}
        if "requestBody" in operation:
            expected |= {400, 413, 415}
        places = {parameter["in"] for parameter in operation.get("parameters", [])}
        if "query" in places:
            expected.add(400)
        if "path" in places:
            expected.add(404)
        assert expected <= set(errors), (method, path, sorted(errors))
        for status, response in errors.items():
            assert list(response["content"]) == ["application/problem+json"], (
                method,
                path,
                status,
            )


def test_bearer_tokens_are_the_security_scheme(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert schemes == {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": schemes["bearer"]["description"],
        }
    }
    assert document["security"] == [{"bearer": []}]
    for path, method, operation in operations(document):
        if operation.get("security") == []:
            # Open to anyone: it must be the signed download link alone.
            assert path.endswith("/download"), (method, path)
        else:
            assert {401, 403} <= {int(s) for s in operation["responses"]}


def test_docs_page_is_served_from_the_app_not_a_cdn(client: FlaskClient) -> None:
    page = client.get("/api/docs")
    assert page.status_code == 200
    assert page.headers["Content-Security-Policy"] == DOCS_CSP
    html = page.get_data(as_text=True)
    assert "://" not in html
    # The favicon is an empty data: URL, so the browser asks for none.
    sources = re.findall(r'(?:src|href)="(/[^"]+)"', html)
    assert len(sources) == len(ASSETS) + 1  # and the script starting the UI
    for source in sources:
        with client.get(source) as asset:
            assert asset.status_code == 200, source
            assert asset.data


def test_docs_page_refuses_other_files(client: FlaskClient) -> None:
    response = client.get("/api/docs/assets/__init__.py")
    assert response.status_code == 404
    problem_of(response)


def test_docs_page_is_off_in_production_unless_turned_on(
    make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    off = make_app(API_DOCS=False).test_client()
    assert off.get("/api/docs").status_code == 404
    assert off.get("/api/openapi.json").status_code == 200
    on = make_app(API_DOCS=True).test_client()
    assert on.get("/api/docs").status_code == 200


@pytest.mark.parametrize(
    ("app_env", "docs"),
    [("development", True), ("testing", True), ("production", False)],
)
def test_the_docs_page_is_on_by_default_outside_production(
    app_env: str, docs: bool
) -> None:
    assert load_settings(app_env).API_DOCS is docs


# Examples per operation: enough to reach every status each route documents,
# few enough that the whole contract runs in well under a minute.
EXAMPLES = 25
# Input the schema allows but a rule it cannot state refuses, with the
# documented 400: an opaque cursor, `until` after `since`, an instant whose
# offset takes it past year 9999. Every other check runs.
SEMANTIC = [positive_data_acceptance]
UNLIMITED = "1000000 per minute"


def test_the_app_keeps_its_contract(make_app: Any) -> None:
    """Every operation, fuzzed in-process with a token holding every scope:
    no 5xx, and every status, header and body as the document says."""
    # Limits raised past the fuzzer's pace, not turned off: a request
    # without a token (schemathesis sends some) must still meet them.
    app = make_app(RATELIMIT_FAILED_AUTH=UNLIMITED, RATELIMIT_PER_TOKEN=UNLIMITED)
    headers = {"Authorization": f"Bearer {issue_token(app)}"}
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 5
    statuses: Counter[int] = Counter()

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def keeps_its_contract(case: Any) -> None:
            response = case.call_and_validate(headers=headers, excluded_checks=SEMANTIC)
            statuses[response.status_code] += 1

        keeps_its_contract()

    # The token let the fuzzer past authentication to the routes themselves.
    assert {200, 201} <= set(statuses), statuses
    print(f"{len(operations)} operations, {statuses.total()} cases: {statuses}")

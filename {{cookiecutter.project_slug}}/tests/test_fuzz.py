"""No input is a 5xx: arbitrary JSON bodies for create, arbitrary query
strings for the list and the exports, property-based with hypothesis.

Derandomized (the same examples on every run, so CI never flakes) and small
enough to take a few seconds; one app and client serve every example.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
EVENT_FIELDS = ["kind", "amount", "payload", "occurred_at"]
QUERY_FIELDS = ["limit", "cursor", "kind", "since", "until"]


def _with_offset(value: datetime, minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return f"{value.isoformat()}{sign}{hours:02d}:{rest:02d}"


# ISO 8601 instants over Python's whole range, with any offset: the edges of
# the range overflow once in UTC.
instants = (
    st.sampled_from(["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+14:00"])
    | st.builds(
        _with_offset,
        st.datetimes(),
        st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1),
    )
    | st.datetimes().map(datetime.isoformat)
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["\x00", "a\x00", "9999999999.99", "-0.01", "1e999999", "k"])
    | instants
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
# Mostly near-valid events (so values reach the database), some anything.
bodies = st.fixed_dictionaries(
    {"kind": st.just("k") | json_values, "amount": st.just("1.00") | json_values},
    optional={
        "payload": st.sampled_from(["\x00", "a\x00b"])
        | st.text(max_size=20)
        | json_values,
        "occurred_at": instants | json_values,
    },
) | st.dictionaries(
    st.sampled_from(EVENT_FIELDS) | st.text(max_size=5), json_values, max_size=5
)
queries = st.dictionaries(
    st.sampled_from(QUERY_FIELDS) | st.text(max_size=5),
    st.text(max_size=30) | instants | st.integers().map(str),
    max_size=4,
)


def assert_handled(response: Any) -> None:
    assert response.status_code < 500, response.get_data(as_text=True)
    if response.status_code >= 400:
        assert response.mimetype == "application/problem+json"


@FUZZ
@given(body=bodies)
# The inputs that were 500s once, always among the examples.
@example(body={"kind": "k", "amount": "1.00", "payload": "a\x00b"})
@example(body={"kind": "k", "amount": "1", "occurred_at": "9999-12-31T23:59:59-23:59"})
@example(body={"kind": "k", "amount": "1", "occurred_at": "0001-01-01T00:00:00+14:00"})
def test_create_never_fails_on_a_json_object(
    client: FlaskClient, body: dict[str, Any]
) -> None:
    # allow_nan: NaN and Infinity are tokens Python's parser accepts too.
    data = json.dumps(body, allow_nan=True)
    response = client.post("/api/events", data=data, content_type="application/json")
    assert_handled(response)


@FUZZ
@given(data=st.binary(max_size=200) | json_values.map(json.dumps).map(str.encode))
def test_create_never_fails_on_any_bytes(client: FlaskClient, data: bytes) -> None:
    response = client.post("/api/events", data=data, content_type="application/json")
    assert_handled(response)


@pytest.mark.parametrize(
    "path", ["/api/events", "/api/events/export.csv", "/api/events/export.ndjson"]
)
@FUZZ
@given(query=queries)
@example(query={"kind": "a\x00"})
@example(query={"since": "9999-12-31T23:59:59-23:59"})
@example(query={"until": "0001-01-01T00:00:00+14:00"})
def test_reads_never_fail_on_a_query_string(
    client: FlaskClient, path: str, query: dict[str, str]
) -> None:
    response = client.get(path, query_string=query)
    # A streamed export fails, if at all, while its body is read.
    response.get_data()
    assert_handled(response)

"""Prometheus metrics at ``/metrics``.

In one process (tests, development) requests are counted in memory, by
endpoint name, method and status, never by raw path. Under gunicorn with
several workers and ``PROMETHEUS_MULTIPROC_DIR`` set, every worker's counts
are added up, a replaced worker's counts stay, and its live gauges go.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from flask import Flask
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from support import free_port, problem_of, process_group, wait_for

PROJECT_DIR = Path(__file__).resolve().parent.parent
GUNICORN_CONF = PROJECT_DIR / "deploy" / "gunicorn.conf.py"

Labels = dict[str, str]


def requests_counted(endpoint: str, method: str, status: int) -> float:
    """``http_requests_total`` of this process for these labels (0 if none)."""
    labels = {"endpoint": endpoint, "method": method, "status": str(status)}
    return REGISTRY.get_sample_value("http_requests_total", labels) or 0.0


def samples(text: str, name: str) -> list[tuple[Labels, float]]:
    """(labels, value) of every sample called ``name`` in exposition text."""
    return [
        (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


def total(text: str, name: str, **labels: str) -> float:
    """Sum of the ``name`` samples whose labels include ``labels``."""
    return sum(
        value
        for sample_labels, value in samples(text, name)
        if labels.items() <= sample_labels.items()
    )


# One process -----------------------------------------------------------------


def test_requests_are_counted_by_endpoint_method_and_status(app: Flask) -> None:
    client = app.test_client()
    cases = [
        (("health.healthz", "GET", 200), lambda: client.get("/healthz")),
        (("unmatched", "GET", 404), lambda: client.get("/no/such/page")),
        (("events.create", "POST", 400), lambda: client.post("/api/events", json={})),
    ]
    for labels, send in cases:
        before = requests_counted(*labels)
        response = send()
        assert response.status_code == labels[2]
        if response.status_code >= 400:
            problem_of(response)
        assert requests_counted(*labels) == before + 1, labels


def test_latency_is_a_histogram_per_endpoint(app: Flask) -> None:
    labels = {"endpoint": "health.healthz", "method": "GET", "status": "200"}
    before = REGISTRY.get_sample_value("http_request_duration_seconds_count", labels)
    assert app.test_client().get("/healthz").status_code == 200
    after = REGISTRY.get_sample_value("http_request_duration_seconds_count", labels)
    assert after == (before or 0) + 1
    every = REGISTRY.get_sample_value(
        "http_request_duration_seconds_bucket", {**labels, "le": "+Inf"}
    )
    assert every == after
    assert REGISTRY.get_sample_value("http_request_duration_seconds_sum", labels) > 0


def test_no_label_carries_a_raw_path(app: Flask) -> None:
    """Paths with ids, or made up by a client, add no series of their own."""
    client = app.test_client()
    event_id = uuid.uuid4()
    probe = f"probe-{uuid.uuid4().hex}"
    assert client.get(f"/api/events/{event_id}").status_code == 404
    assert client.get(f"/{probe}").status_code == 404
    assert client.open("/healthz", method="BREW").status_code == 405

    text = client.get("/metrics").get_data(as_text=True)
    values = {
        value
        for labels, _ in samples(text, "http_requests_total")
        for value in labels.values()
    }
    assert not any("/" in value for value in values), values
    assert not any(str(event_id) in value or probe in value for value in values)
    assert {"events.get", "unmatched", "other"} <= values


def test_metrics_endpoint_speaks_prometheus_text_and_openmetrics(app: Flask) -> None:
    client = app.test_client()
    client.get("/healthz")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    text = response.get_data(as_text=True)
    assert total(text, "http_requests_total", endpoint="health.healthz") >= 1
    assert samples(text, "http_request_duration_seconds_bucket")

    openmetrics = client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text"}
    )
    assert openmetrics.mimetype == "application/openmetrics-text"
    assert openmetrics.get_data(as_text=True).endswith("# EOF\n")


def test_requests_in_progress_are_counted_while_they_run(app: Flask) -> None:
    def in_progress() -> str:
        labels = {"endpoint": "in_progress", "method": "GET"}
        return str(REGISTRY.get_sample_value("http_requests_in_progress", labels))

    app.add_url_rule("/in-progress", "in_progress", in_progress)
    client = app.test_client()
    assert client.get("/in-progress").get_data(as_text=True) == "1.0"
    labels = {"endpoint": "in_progress", "method": "GET"}
    assert REGISTRY.get_sample_value("http_requests_in_progress", labels) == 0


def test_metrics_can_be_turned_off(make_app: Callable[..., Flask]) -> None:
    client = make_app(METRICS_ENABLED=False).test_client()
    before = requests_counted("health.healthz", "GET", 200)
    client.get("/healthz")
    assert requests_counted("health.healthz", "GET", 200) == before
    assert client.get("/metrics").status_code == 404


# Several gunicorn workers ----------------------------------------------------


def fetch(port: int, path: str) -> tuple[int, str] | None:
    """Status and body of ``GET path`` on a fresh connection, or None while
    nothing answers yet."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def running_gunicorn(
    env: dict[str, str], log: Path
) -> AbstractContextManager[subprocess.Popen[bytes]]:
    """gunicorn with the shipped config (which names the WSGI app), stopped
    with SIGTERM on exit."""
    command = [sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF)]
    return process_group(command, env, log, grace=20)


def files_by_pid(directory: Path, kind: str) -> dict[int, Path]:
    """The ``<kind>_<pid>.db`` files prometheus_client writes, by pid."""
    return {
        int(path.stem.rsplit("_", 1)[1]): path
        for path in directory.glob(f"{kind}_*.db")
    }


def healthz_total(port: int) -> float:
    answer = fetch(port, "/metrics")
    assert answer is not None
    assert answer[0] == 200
    return total(
        answer[1], "http_requests_total", endpoint="health.healthz", status="200"
    )


def test_gunicorn_workers_add_up_and_survive_a_restart(tmp_path: Path) -> None:
    """Requests spread over two workers are all counted; after one worker is
    replaced its counts stay and its live gauges are gone (child_exit)."""
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    stale = metrics_dir / "counter_1.db"
    stale.write_bytes(b"an earlier run's file")
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GUNICORN_")},
        "APP_ENV": "testing",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "HOME": str(tmp_path),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "2",
        "GUNICORN_WORKER_CLASS": "sync",
        "GUNICORN_GRACEFUL_TIMEOUT": "5",
    }
    log = tmp_path / "gunicorn.log"
    sent = 20

    with running_gunicorn(env, log) as process:
        wait_for(
            lambda: fetch(port, "/readyz") or process.poll() is not None,
            timeout=60,
            what="gunicorn to answer",
        )
        assert process.poll() is None, log.read_text()
        assert not stale.exists()  # on_starting emptied the directory

        # A sync worker serves one connection at a time: while one holds an
        # unfinished request, the others must take every new connection.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as held:
            held.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
            for _ in range(sent - 1):
                assert fetch(port, "/healthz") == (200, '{"status":"ok"}\n')
            held.sendall(b"Connection: close\r\n\r\n")
            assert held.recv(1024).startswith(b"HTTP/1.1 200")

        counters = files_by_pid(metrics_dir, "counter")
        workers = set(counters) - {process.pid}
        assert len(workers) == 2, (counters, log.read_text())
        assert healthz_total(port) == sent

        # Replace a worker, as max_requests or a crash would.
        retired = next(iter(workers))
        assert retired in files_by_pid(metrics_dir, "gauge_livesum")
        os.kill(retired, signal.SIGTERM)
        wait_for(
            lambda: retired not in files_by_pid(metrics_dir, "gauge_livesum"),
            timeout=30,
            what="child_exit to drop the retired worker's live gauges",
        )
        assert retired in files_by_pid(metrics_dir, "counter")
        assert healthz_total(port) == sent
        answer = fetch(port, "/metrics")
        assert answer is not None
        in_flight = samples(answer[1], "http_requests_in_progress")
        # Only the scrape itself is in flight, in whichever worker serves it.
        assert sum(value for _, value in in_flight) == 1, in_flight

    assert process.returncode == 0, log.read_text()
    assert "Traceback" not in log.read_text(), log.read_text()

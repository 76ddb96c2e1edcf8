"""Celery task counts by task name and state, served by the worker itself.

An in-process worker on the real Redis broker counts received, started,
succeeded, failed and retried tasks; a real prefork ``celery worker`` adds
up the counts of its pool processes on its own ``/metrics`` port.
"""

from __future__ import annotations

import http.client
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from flask import Flask
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from {{ cookiecutter.package_name }}.celery_app import enqueue
from {{ cookiecutter.package_name }}.extensions import db
from {{ cookiecutter.package_name }}.jobs import tasks
from {{ cookiecutter.package_name }}.jobs.models import Job, JobStatus
from {{ cookiecutter.package_name }}.metrics import tasks as task_metrics

from celery_support import WorkerProcess, celery_process
from support import account_id, free_port, wait_for

PROJECT_DIR = Path(__file__).resolve().parent.parent
STATES = ("received", "started", "succeeded", "failed", "retried")


def counted(task: str, state: str) -> float:
    labels = {"task": task, "state": state}
    return REGISTRY.get_sample_value("celery_tasks_total", labels) or 0.0


def counts_of(text: str, task: str) -> dict[str, float]:
    """``celery_tasks_total`` of ``task`` by state, from exposition text."""
    found = dict.fromkeys(STATES, 0.0)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "celery_tasks_total" and sample.labels["task"] == task:
                found[sample.labels["state"]] += sample.value
    return found


def scrape(port: int) -> str | None:
    """The body of ``/metrics`` on ``port``, or None while nothing answers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        body = response.read().decode()
        return body if response.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


def register_tasks(celery: Celery) -> None:
    """A task that succeeds, one that fails, one that retries once."""

    @celery.task(name="test.metrics_ok", shared=False, ignore_result=True)
    def succeed() -> None:
        return None

    @celery.task(name="test.metrics_fail", shared=False, ignore_result=True)
    def fail() -> None:
        raise ValueError("fails on purpose")

    @celery.task(name="test.metrics_retry", shared=False, ignore_result=True, bind=True)
    def retry_once(self: Any) -> None:
        if self.request.retries == 0:
            raise self.retry(countdown=0, max_retries=1)


def test_task_states_are_counted_and_served_by_the_worker(
    make_app: Callable[..., Flask], celery_env: dict[str, str]
) -> None:
    port = free_port()
    app = make_app(WORKER_METRICS_PORT=port)
    celery = app.extensions["celery"]
    register_tasks(celery)
    names = ("test.metrics_ok", "test.metrics_fail", "test.metrics_retry")
    before = {(name, state): counted(name, state) for name in names for state in STATES}

    def delta(name: str, state: str) -> float:
        return counted(name, state) - before[name, state]

    try:
        with start_worker(
            celery, pool="solo", perform_ping_check=False, loglevel="INFO"
        ):
            for name in names:
                celery.tasks[name].delay()
            wait_for(
                lambda: (
                    delta("test.metrics_ok", "succeeded")
                    and delta("test.metrics_fail", "failed")
                    and delta("test.metrics_retry", "succeeded")
                ),
                what="the three tasks to finish",
            )
            served = wait_for(lambda: scrape(port), what="the worker's /metrics")
    finally:
        # A real worker closes it on warm shutdown; the test worker stops cold.
        task_metrics.stop_serving()

    assert {state: delta("test.metrics_ok", state) for state in STATES} == {
        "received": 1,
        "started": 1,
        "succeeded": 1,
        "failed": 0,
        "retried": 0,
    }
    assert {state: delta("test.metrics_fail", state) for state in STATES} == {
        "received": 1,
        "started": 1,
        "succeeded": 0,
        "failed": 1,
        "retried": 0,
    }
    assert {state: delta("test.metrics_retry", state) for state in STATES} == {
        "received": 2,
        "started": 2,
        "succeeded": 1,
        "failed": 0,
        "retried": 1,
    }
    # The worker's endpoint serves the same counters.
    assert counts_of(served, "test.metrics_fail") == {
        state: counted("test.metrics_fail", state) for state in STATES
    }
    assert scrape(port) is None


@pytest.mark.parametrize(
    ("pool", "expected"),
    [("prefork", True), ("solo", False), ("threads", False)],
)
def test_only_prefork_needs_the_shared_directory(pool: str, expected: bool) -> None:
    assert task_metrics.uses_child_processes(pool) is expected


def celery_worker(
    env: dict[str, str], log_path: Path
) -> AbstractContextManager[WorkerProcess]:
    """``celery worker`` with two prefork pool processes, stopped on exit."""
    arguments = [
        "worker",
        "--pool=prefork",
        "--concurrency=2",
        "--loglevel=INFO",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        f"--hostname=metrics-{uuid.uuid4().hex[:8]}@%h",
    ]
    return celery_process(arguments, env, log_path, ready=" ready.")


def test_prefork_worker_adds_up_its_pool_processes(
    make_app: Callable[..., Flask],
    celery_env: dict[str, str],
    database_url: str,
    tmp_path: Path,
) -> None:
    """``received`` is counted in the worker's main process, the rest in
    pool processes; the worker's endpoint shows them all."""
    app = make_app()
    owner_id, other_id = account_id(app), account_id(app, "other")
    metrics_dir = tmp_path / "worker-metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"an earlier run's file")
    port = free_port()
    env = {
        **celery_env,
        "DATABASE_URL": database_url,
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        "WORKER_METRICS_PORT": str(port),
    }
    with celery_worker(env, tmp_path / "worker.log") as worker:
        assert not (metrics_dir / "counter_1.db").exists()
        client = app.test_client()
        client.post("/api/events", json={"kind": "sale", "amount": "1.00"})
        assert client.post("/api/jobs/owner-summaries").status_code == 202
        with app.app_context():
            broken = Job(
                owner_id=owner_id,
                kind="owner_summary",
                params={},
                status=JobStatus.PENDING,
            )
            db.session.add(broken)
            db.session.commit()
            # Sent for another account than the job's: this task fails.
            broken_id = str(broken.id)
            enqueue(tasks.summarize_owner, broken_id, other_id, task_id=broken_id)
            db.session.remove()

        def finished() -> dict[str, float] | None:
            text = scrape(port)
            counts = counts_of(text, "jobs.summarize_owner") if text else None
            if counts and counts["succeeded"] + counts["failed"] >= 2:
                return counts
            return None

        counts = wait_for(finished, timeout=60, what="both jobs to be counted")
        writers = {path.stem.rsplit("_", 1)[1] for path in metrics_dir.glob("*.db")}
        main_pid = str(worker.process.pid)

    assert counts == {
        "received": 2,
        "started": 2,
        "succeeded": 1,
        "failed": 1,
        "retried": 0,
    }
    # The main process and at least one pool process wrote counts.
    assert main_pid in writers
    assert len(writers) >= 2, writers

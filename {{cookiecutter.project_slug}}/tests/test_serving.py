"""serving.py: what deploy/gunicorn.conf.py needs code for.

Worker counts come from the container's CPU quota, not the host's CPU
count; a forked worker gets database pools of its own; gunicorn's own
messages are JSON lines in the app's format.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text

from {{ cookiecutter.package_name }} import serving
from {{ cookiecutter.package_name }}.extensions import db


def write(path: Path, content: str) -> Path:
    path.write_text(content + "\n", encoding="ascii")
    return path


# CPU limit and worker count -------------------------------------------------


@pytest.mark.parametrize(
    ("cpu_max", "available", "expected"),
    [
        ("200000 100000", 4, 2),
        ("150000 100000", 4, 2),  # a fraction of a CPU rounds up
        ("50000 100000", 4, 1),
        ("800000 100000", 2, 2),  # never more than the CPUs it may run on
        ("max 100000", 3, 3),  # no quota
    ],
)
def test_cgroup_v2_quota_sets_the_cpu_limit(
    tmp_path: Path, cpu_max: str, available: int, expected: int
) -> None:
    cpus = serving.cpu_limit(
        cpu_max=write(tmp_path / "cpu.max", cpu_max),
        cfs_quota=tmp_path / "missing-quota",
        cfs_period=tmp_path / "missing-period",
        available=available,
    )
    assert cpus == expected


@pytest.mark.parametrize(
    ("quota", "period", "expected"),
    [("100000", "100000", 1), ("250000", "100000", 3), ("-1", "100000", 4)],
)
def test_cgroup_v1_quota_sets_the_cpu_limit(
    tmp_path: Path, quota: str, period: str, expected: int
) -> None:
    cpus = serving.cpu_limit(
        cpu_max=tmp_path / "missing-cpu.max",
        cfs_quota=write(tmp_path / "cpu.cfs_quota_us", quota),
        cfs_period=write(tmp_path / "cpu.cfs_period_us", period),
        available=4,
    )
    assert cpus == expected


def test_cgroup_v2_wins_over_v1(tmp_path: Path) -> None:
    cpus = serving.cpu_limit(
        cpu_max=write(tmp_path / "cpu.max", "100000 100000"),
        cfs_quota=write(tmp_path / "cpu.cfs_quota_us", "300000"),
        cfs_period=write(tmp_path / "cpu.cfs_period_us", "100000"),
        available=4,
    )
    assert cpus == 1


def test_without_a_quota_the_affinity_mask_counts(tmp_path: Path) -> None:
    """The CPUs this process may run on, which a cpuset can make fewer than
    the host's ``os.cpu_count()``."""
    cpus = serving.cpu_limit(
        cpu_max=tmp_path / "missing-cpu.max",
        cfs_quota=tmp_path / "missing-quota",
        cfs_period=tmp_path / "missing-period",
    )
    if hasattr(os, "sched_getaffinity"):
        assert cpus == len(os.sched_getaffinity(0))
    else:
        assert cpus >= 1


@pytest.mark.parametrize(
    ("cpus", "maximum", "expected"),
    [(1, 8, 3), (2, 8, 5), (3, 8, 7), (4, 8, 8), (64, 8, 8), (2, 2, 2)],
)
def test_default_workers_is_two_per_cpu_plus_one_capped(
    cpus: int, maximum: int, expected: int
) -> None:
    assert serving.default_workers(cpus, maximum) == expected


def test_dispose_engines_gives_a_forked_worker_its_own_pool(
    make_app: Callable[..., Flask],
) -> None:
    app = make_app()
    with app.app_context():
        db.session.execute(text("SELECT 1"))
        db.session.remove()
        inherited = db.engine.pool
    assert serving.dispose_engines(app) == 1
    with app.app_context():
        assert db.engine.pool is not inherited
    # In a real fork the parent still owns these connections; here this
    # process is the parent, so close them.
    inherited.dispose()


def test_post_fork_leaves_apps_alone_without_preload() -> None:
    """Without preload the worker has not loaded the app yet; the hook must
    not load it early."""

    def load_app() -> Any:
        raise AssertionError("post_fork loaded the app")

    server = SimpleNamespace(
        cfg=SimpleNamespace(preload_app=False), app=SimpleNamespace(wsgi=load_app)
    )
    serving.post_fork(server, SimpleNamespace(pid=1))


# Metrics directory ------------------------------------------------------------


@pytest.fixture
def no_metrics_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """metrics_dir() sets both variables; monkeypatch puts them back."""
    monkeypatch.delenv(serving.METRICS_DIR_VARIABLE, raising=False)
    monkeypatch.delenv(serving.PRIVATE_METRICS_DIR_VARIABLE, raising=False)


@pytest.mark.usefixtures("no_metrics_dir")
def test_without_a_metrics_dir_gunicorn_gets_a_private_one(tmp_path: Path) -> None:
    """On tmpfs, named after the master's pid, and removed at exit."""
    private = serving.metrics_dir(shared_memory=tmp_path)
    assert private == str(tmp_path / f"{serving.PACKAGE}-metrics-{os.getpid()}")
    assert os.environ[serving.METRICS_DIR_VARIABLE] == private
    serving.reset_metrics_dir(Path(private))
    serving.on_exit(SimpleNamespace())
    assert not Path(private).exists()


@pytest.mark.usefixtures("no_metrics_dir")
def test_a_configured_metrics_dir_is_used_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(serving.METRICS_DIR_VARIABLE, str(tmp_path))
    assert serving.metrics_dir(shared_memory=tmp_path / "unused") == str(tmp_path)
    serving.on_exit(SimpleNamespace())
    assert tmp_path.is_dir()


def test_a_new_run_starts_the_metrics_afresh(tmp_path: Path) -> None:
    """Files of processes that are gone would carry their counts over."""
    stale, kept = write(tmp_path / "counter_123.db", ""), write(tmp_path / "x", "")
    serving.reset_metrics_dir(tmp_path)
    assert not stale.exists()
    assert kept.exists()

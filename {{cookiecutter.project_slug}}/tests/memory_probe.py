"""Loaded into a test worker with ``celery worker --include memory_probe``.

Each pool process traces its allocations from its start. Two tasks read
them, in that process: ``test.memory_mark`` keeps a snapshot and
``test.memory_growth`` says how much more is allocated now, and where.
With MEMORY_PROBE_LEAK set, every task's result stays behind in a dict:
a planted leak the same check must catch.
"""

from __future__ import annotations

import os
import tracemalloc
from typing import Any

from celery import shared_task
from celery.signals import task_postrun, worker_process_init

from memory_check import growth_between, snapshot

_marked: list[tracemalloc.Snapshot] = []
_leaked: dict[str, Any] = {}


@worker_process_init.connect(weak=False)
def _start_tracing(**_kwargs: Any) -> None:
    tracemalloc.start()


@shared_task(name="test.memory_mark")
def memory_mark() -> int:
    _marked[:] = [snapshot()]
    return os.getpid()


@shared_task(name="test.memory_growth")
def memory_growth() -> dict[str, Any]:
    growth = growth_between(_marked[0], snapshot())
    return {
        "pid": os.getpid(),
        "bytes": growth.bytes,
        "top_sites": list(growth.top_sites),
        "leaked": len(_leaked),
    }


if os.environ.get("MEMORY_PROBE_LEAK"):

    @task_postrun.connect(weak=False)
    def _leak(task_id: str, retval: Any = None, **_kwargs: Any) -> None:
        """A memo of every task's result that nothing ever empties."""
        _leaked[task_id] = retval

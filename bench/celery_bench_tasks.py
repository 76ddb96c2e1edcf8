"""No-op tasks for the Celery benchmark, loaded by the worker with ``-I``.

Both run in the same worker process and differ only in their base class:
the project's ``AppTask`` (app context, request id, plain-value check) and
Celery's bare ``Task``.
"""

from __future__ import annotations

import importlib
import os

from celery import Task

worker = importlib.import_module(f"{os.environ['BENCH_PACKAGE']}.worker")
celery = worker.celery


@celery.task(name="bench.noop_app", ignore_result=True, shared=False)
def noop_app(n: int) -> int:
    return n


@celery.task(name="bench.noop_bare", base=Task, ignore_result=True, shared=False)
def noop_bare(n: int) -> int:
    return n

"""Loaded into test worker processes with ``celery worker --include worker_gate``.

With WORKER_GATE_DIR set, the first task to reach WORKER_GATE_PHASE
(``prerun``: received, before its body; ``postrun``: its body done and
committed, its message not yet acknowledged) writes ``reached-<pid>`` there
and waits, so a test can kill that exact process at that exact point, or
break something else and then let the task go on by writing ``release``
there. Later tasks pass straight through.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celery.signals import task_postrun, task_prerun

GATE_DIR = os.environ.get("WORKER_GATE_DIR")
GATE_PHASE = os.environ.get("WORKER_GATE_PHASE", "prerun")


def _hold(phase: str) -> None:
    if not GATE_DIR or phase != GATE_PHASE:
        return
    gate = Path(GATE_DIR)
    if any(gate.glob("reached-*")):
        return
    (gate / f"reached-{os.getpid()}").write_text(phase)
    while not (gate / "release").exists():  # or the test kills this process
        time.sleep(0.1)


@task_prerun.connect(weak=False)
def _before_task(**_kwargs: Any) -> None:
    _hold("prerun")


@task_postrun.connect(weak=False)
def _after_task(**_kwargs: Any) -> None:
    _hold("postrun")

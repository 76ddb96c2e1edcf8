"""Loaded into test worker processes with ``celery worker --include overrun_task``.

``test.overrun`` is a job task that starts its job and then outlives its
soft time limit, so the hard limit kills its pool process: the way a stuck
query or a runaway loop ends in production.
"""

from __future__ import annotations

import time

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded

from {{ cookiecutter.package_name }}.jobs import services
from {{ cookiecutter.package_name }}.jobs.tasks import JobTask


@shared_task(base=JobTask, name="test.overrun")
def overrun(job_id: str, owner_id: int) -> None:
    services.start(job_id, owner_id)
    while True:
        try:
            time.sleep(0.1)
        except SoftTimeLimitExceeded:
            continue

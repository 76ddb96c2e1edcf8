"""The worker's broker consumer, kept alive when Redis drops mid-task.

Celery 5.7.0 exits with ``Unrecoverable error: AttributeError("'NoneType'
object has no attribute 'hostname'")`` when Redis goes away while a task
runs. Its ``on_connection_error_after_connected`` collects the lost
connection, which detaches it from its kombu transport, and then (new in
5.7.0) closes it as well. That second close reaches the Redis channel the
running task's message came from: putting the unacknowledged message back
needs a new Redis pool, built from the transport's settings, now gone, so
it raises; and if it gets past that, it drops the channel's pool, so the
task's acknowledgement raises the same error when the task ends.

:class:`Consumer` keeps that close from running: the connection is only
collected, as before 5.7.0. The running task finishes and is acknowledged,
and the worker reconnects as usual. ``worker_consumer`` (a Celery setting)
names this class; tests/test_broker_outage.py fails if a Celery release
breaks it or no longer needs it.
"""

from __future__ import annotations

from typing import Any

from celery.worker.consumer import Consumer as CeleryConsumer


def _leave_to_collect() -> None:
    """Stands in for ``Connection.close`` on a connection being collected."""


class Consumer(CeleryConsumer):
    def on_connection_error_after_connected(self, exc: Any) -> None:
        if self.connection is not None:
            self.connection.close = _leave_to_collect
        super().on_connection_error_after_connected(exc)

"""A dependency that is away is reported once per burst, not once per request.

When the database or the broker goes down, every request fails the same way
within milliseconds. Logging a traceback for each buries the log and sends
Sentry thousands of copies of one event. An :class:`Outage` logs the first
failure of a burst at ERROR (one line with the request id, one Sentry event),
counts the rest in a metric, and logs at WARNING how many failed once the
dependency answers again (or the burst has been quiet for ``quiet_seconds``).

The line names the error's class and the first line of its driver message,
never the SQL statement or its parameters.
"""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client import Counter

from .logs import describe

__all__ = ["FAILURES", "Outage", "describe"]

log = logging.getLogger(__name__)

FAILURES = Counter(
    "dependency_failures",
    "Requests or tasks that failed because a dependency was unavailable.",
    ("dependency",),
)


class Outage:
    """Bursts of failures of one dependency, safe to share across threads."""

    def __init__(self, dependency: str, *, quiet_seconds: float = 30.0) -> None:
        self.dependency = dependency
        self.quiet_seconds = quiet_seconds
        self._lock = threading.Lock()
        self._failures = 0
        self._last_failure = 0.0

    def failed(self, error: BaseException) -> None:
        """Count one failure; log it if it starts a burst."""
        FAILURES.labels(self.dependency).inc()
        now = time.monotonic()
        with self._lock:
            ended = self._failures and now - self._last_failure > self.quiet_seconds
            if ended:
                self._close_burst()
            starts = self._failures == 0
            self._failures += 1
            self._last_failure = now
        if starts:
            log.error(
                "%s unavailable: %s (further failures are counted, not logged, "
                "until it answers again)",
                self.dependency,
                describe(error),
            )

    def answered(self) -> None:
        """The dependency worked: close the burst, if one is open."""
        if not self._failures:  # the common case, without taking the lock
            return
        with self._lock:
            if self._failures:
                self._close_burst()

    def _close_burst(self) -> None:
        log.warning(
            "%s answering again after %d failed attempts",
            self.dependency,
            self._failures,
        )
        self._failures = 0

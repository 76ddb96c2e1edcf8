"""What a client sees of a failed job: a stable code and a short message.

The exception behind a failure (an SQL statement and its parameters, a
host name, a stack) is for the logs and Sentry; the job row keeps only the
code, and the message is looked up from it when the job is shown.
"""

from __future__ import annotations

import enum

from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import OperationalError as DatabaseOperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError


class JobError(enum.StrEnum):
    BROKER_UNAVAILABLE = "broker_unavailable"
    DATABASE_UNAVAILABLE = "database_unavailable"
    TIMED_OUT = "timed_out"
    LOST = "lost"
    INTERNAL_ERROR = "internal_error"

    @property
    def message(self) -> str:
        return MESSAGES[self]


MESSAGES = {
    JobError.BROKER_UNAVAILABLE: "The task queue was unreachable; try again later.",
    JobError.DATABASE_UNAVAILABLE: "The database was unavailable; try again later.",
    JobError.TIMED_OUT: "The job did not finish within its time limit.",
    JobError.LOST: "The job's task was lost before it could run.",
    JobError.INTERNAL_ERROR: "The job failed because of an internal error.",
}

_CLASSIFIED: tuple[tuple[tuple[type[BaseException], ...], JobError], ...] = (
    ((SoftTimeLimitExceeded, TimeLimitExceeded), JobError.TIMED_OUT),
    ((DatabaseOperationalError, PoolTimeoutError), JobError.DATABASE_UNAVAILABLE),
    (
        (BrokerError, RedisConnectionError, RedisTimeoutError),
        JobError.BROKER_UNAVAILABLE,
    ),
)


def classify(error: BaseException) -> JobError:
    """The code of the exception a job's task finally failed with."""
    for types, code in _CLASSIFIED:
        if isinstance(error, types):
            return code
    return JobError.INTERNAL_ERROR


def public(code: str | None) -> dict[str, str] | None:
    """The ``error`` member of a job's JSON: ``{"code", "message"}`` or None.

    A code this version does not know (written by a newer one) is shown as
    it is, with the generic message.
    """
    if code is None:
        return None
    try:
        known = JobError(code)
    except ValueError:
        return {"code": code, "message": JobError.INTERNAL_ERROR.message}
    return {"code": known.value, "message": known.message}

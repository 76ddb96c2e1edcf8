"""slow_app with one more test-only route, for the gevent tests that need
Redis (tests/test_gevent_worker.py), served as ``slow_app_redis:app``.

- ``GET /test/wait-in-redis`` waits in Redis (``BLPOP`` on the list
  ``TEST_LIST_KEY``, on ``REDIS_URL``) until the test pushes an item, then
  answers this worker's pid. Its connection is named ``TEST_CLIENT_NAME``,
  so the test can count the waiting ones in ``CLIENT LIST``.
"""

from __future__ import annotations

import os

from redis import Redis

from slow_app import app

__all__ = ["app"]


@app.get("/test/wait-in-redis")
def wait_in_redis() -> dict[str, int]:
    with Redis.from_url(
        os.environ["REDIS_URL"], client_name=os.environ["TEST_CLIENT_NAME"]
    ) as client:
        client.blpop([os.environ["TEST_LIST_KEY"]], timeout=60)
    return {"pid": os.getpid()}

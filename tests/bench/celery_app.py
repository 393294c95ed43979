"""The portal's Celery app plus the bench's bare no-op task, for the bench's workers:
`celery -A tests.bench.celery_app worker …` runs exactly the portal's tasks and settings,
and `bench.noop` as the baseline the chat turn's queue latency is compared with."""

from __future__ import annotations

import os
import time

from celery import shared_task

from portal.celery import app

__all__ = ["app", "noop"]

# An experiment switch, off by default so the bench measures the product as configured:
# Celery's Django fix-up closes every database connection before and after each task
# unless CELERY_DB_REUSE_MAX is set, so each turn opens a new PostgreSQL connection.
if os.environ.get("BENCH_CELERY_DB_REUSE_MAX"):
    app.conf.CELERY_DB_REUSE_MAX = int(os.environ["BENCH_CELERY_DB_REUSE_MAX"])


@shared_task(name="bench.noop", acks_late=True, reject_on_worker_lost=True)
def noop(key: str) -> None:
    """Notes when a worker started it (wall clock) in the bench's Redis DB, and nothing else."""
    started = time.time()
    _redis().rpush("bench:noop", f"{key} {started!r}")


_client = None


def _redis():
    global _client
    if _client is None:
        import redis

        _client = redis.Redis.from_url(os.environ["REDIS_URL"])
    return _client

"""Celery's Redis transport, with one Redis client per channel instead of one per operation.

kombu's Redis channel builds a new `redis.Redis` for every synchronous operation: with
acks_late that is two per task (recording the unacknowledged message, then acknowledging
it). redis-py's client constructor fills a table of a few hundred response callbacks, about
50 µs of Python each time, more when 32 worker threads contend for the GIL. A client is
safe to share between threads (each command takes a connection from the pool, a pipeline
is a new object), so the channel keeps the one it made. Nothing else changes: same pool,
same keys, same acknowledgement emulation and visibility timeout.
"""

from __future__ import annotations

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _sync_client = None

    def _create_client(self, asynchronous=False):
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._sync_client
        if client is None or client.connection_pool is not self._pool:
            client = self._sync_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel

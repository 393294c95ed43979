"""Django's cache as the portal uses it: one Redis pool (and client) per process, and the
generation counters that make a cached entry stale without deleting it.

One Redis connection pool (and client) per process for Django's cache.

Django keeps a cache object per request context (asgiref's Local), and each makes its
own redis-py pool. Under WSGI a context is a thread, so connections were reused; under
ASGI every request is a context of its own, so every request that touched the cache
opened (and dropped) a new TCP connection to Redis, with redis-py's handshake: a tenth
of the web process's time per chat turn in `make bench`. redis-py pools are
thread-safe and reset themselves after a fork, so all contexts can share one.
"""

from __future__ import annotations

import threading
import time

import redis
from django.core.cache.backends.redis import RedisCache, RedisCacheClient


class SharedConnectionPool(redis.ConnectionPool):
    """`from_url()` hands out one pool per URL and options for the whole process."""

    _pools: dict[tuple, redis.ConnectionPool] = {}
    _lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, **kwargs) -> redis.ConnectionPool:
        key = (url, tuple(sorted((name, repr(value)) for name, value in kwargs.items())))
        with cls._lock:
            pool = cls._pools.get(key)
            if pool is None:
                pool = cls._pools[key] = super().from_url(url, **kwargs)
        return pool


class SharedClientRedisCacheClient(RedisCacheClient):
    """Django's client for its Redis cache, with one redis.Redis per pool.

    Django builds a new redis.Redis for every cache operation, and redis.Redis.__init__
    fills a dict of some 180 response callbacks: about 2 % of the web's CPU per chat
    turn (the guardrail policy is read from the cache on every message). A redis.Redis
    is safe to share between threads (a connection is taken from the pool only for the
    time of a command), so one per pool serves every call."""

    _clients: dict[redis.ConnectionPool, redis.Redis] = {}

    def get_client(self, key=None, *, write=False):
        pool = self._get_connection_pool(write)
        client = self._clients.get(pool)
        if client is None:
            client = self._clients.setdefault(pool, self._client(connection_pool=pool))
        return client


class SharedRedisCache(RedisCache):
    """django.core.cache.backends.redis.RedisCache with SharedClientRedisCacheClient."""

    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = SharedClientRedisCacheClient


def next_generation(key: str, timeout: float | None = None) -> None:
    """Move the generation counter at `key` on: entries cached under an earlier value of it
    are never taken again (a delete instead could be undone by a reader that read the old
    rows before the change and caches them after it). One missing (the cache was flushed,
    restarted or evicted it) starts again from the clock, not from 1, so it cannot come back
    as a value something was cached under before."""
    from django.core.cache import cache

    try:
        cache.incr(key)
    except ValueError:
        cache.set(key, time.time_ns(), timeout)

"""One Redis connection pool per process for Django's cache.

Django keeps a cache object per request context (asgiref's Local), and each makes its
own redis-py pool. Under WSGI a context is a thread, so connections were reused; under
ASGI every request is a context of its own, so every request that touched the cache
opened (and dropped) a new TCP connection to Redis, with redis-py's handshake: a tenth
of the web process's time per chat turn in `make bench`. redis-py pools are
thread-safe and reset themselves after a fork, so all contexts can share one.
"""

from __future__ import annotations

import threading

import redis


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

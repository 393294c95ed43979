"""Django's cache as the portal uses it: one Redis pool (and client) per process, the
generation counters that make a cached entry stale without deleting it, and Redis being
unreachable costing the caches' work, never the request.

One Redis connection pool (and client) per process for Django's cache.

Django keeps a cache object per request context (asgiref's Local), and each makes its
own redis-py pool. Under WSGI a context is a thread, so connections were reused; under
ASGI every request is a context of its own, so every request that touched the cache
opened (and dropped) a new TCP connection to Redis, with redis-py's handshake: a tenth
of the web process's time per chat turn in `make bench`. redis-py pools are
thread-safe and reset themselves after a fork, so all contexts can share one.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import redis
from django.core.cache.backends.redis import RedisCache, RedisCacheClient

log = logging.getLogger(__name__)


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


# --- Redis unreachable ----------------------------------------------------------------------
#
# The guardrail policy, skills and AgentCore memory-listing caches only save work: with Redis
# unreachable a read is a miss (the database, or AgentCore, answers), an entry that cannot be
# written is not kept, and a page or a turn goes on. `optional_cache` is Django's cache for
# them, that way. Other users of Django's cache keep theirs failing: allauth's login rate
# limits must not open up because Redis is down (and billing.limits, the tenants' rate
# limits, has its own Redis client and fails closed: portal.db.busy).
#
# The generation counters are what the caches' correctness rests on (a save moves one on, so
# nothing cached before it is taken again), and a save with Redis down cannot move one. The
# save still commits (the database is the truth, and it answers); the move is given up, and:
# * while Redis is down nothing is read from it or written to it: every read is fresh;
# * the entries written before the outage stay keyed under the generation they were read at,
#   and Redis expires them on the clock, outage or not; one written just before the outage
#   and the save may therefore be taken for at most its TTL (POLICY_TTL 60 s, SKILLS_TTL
#   300 s, memory LISTING_TTL 60 s) after Redis is back, and none after that;
# * a Redis restarted empty has no generation and no entry: a fresh start (next_generation).
# That is the bound the caches already accept for a missed invalidation (a signal that did not
# run, or the embedded setup's per-process cache), so it is safe. Failing the save instead would
# turn a cache's outage into "nothing can be saved", which is what the cache must not cost.
# Logged: a generation not moved as a warning (a save's change may be late to show), a read or
# write gone without at most once a minute per process, as information (the outage itself is
# the broker's and the rate limiter's to report: /readyz, the 503 of a refused message).
_QUIET_SECONDS = 60.0
_last_said = {"at": float("-inf")}


def _is_unreachable(exc: BaseException) -> bool:
    from portal.db.busy import is_redis_down

    return is_redis_down(exc)


def _went_without(what: str, exc: BaseException) -> None:
    now = time.monotonic()
    if now - _last_said["at"] >= _QUIET_SECONDS:
        _last_said["at"] = now
        log.info("cache unreachable (%s): %s went to the database instead", exc, what)


class OptionalCache:
    """Django's default cache for entries that only save work: Redis unreachable is a miss
    on a read and nothing kept on a write (see above). Any other error still raises."""

    def get(self, key: str, default: Any = None) -> Any:
        from django.core.cache import cache

        try:
            return cache.get(key, default)
        except Exception as exc:
            if not _is_unreachable(exc):
                raise
            _went_without(f"reading {key}", exc)
            return default

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        from django.core.cache import cache

        keys = list(keys)
        try:
            return cache.get_many(keys)
        except Exception as exc:
            if not _is_unreachable(exc):
                raise
            _went_without(f"reading {keys[0]}", exc)
            return {}

    def set(self, key: str, value: Any, timeout: float | None) -> None:
        from django.core.cache import cache

        try:
            cache.set(key, value, timeout)
        except Exception as exc:
            if not _is_unreachable(exc):
                raise
            _went_without(f"keeping {key}", exc)

    def add(self, key: str, value: Any, timeout: float | None) -> bool:
        from django.core.cache import cache

        try:
            return cache.add(key, value, timeout)
        except Exception as exc:
            if not _is_unreachable(exc):
                raise
            _went_without(f"keeping {key}", exc)
            return False


optional_cache = OptionalCache()


def next_generation(key: str, timeout: float | None = None) -> None:
    """Move the generation counter at `key` on: entries cached under an earlier value of it
    are never taken again (a delete instead could be undone by a reader that read the old
    rows before the change and caches them after it). One missing (the cache was flushed,
    restarted or evicted it) starts again from the clock, not from 1, so it cannot come back
    as a value something was cached under before. With Redis unreachable the move is given
    up, not the caller's save: why that is safe is above."""
    from django.core.cache import cache

    try:
        try:
            cache.incr(key)
        except ValueError:
            cache.set(key, time.time_ns(), timeout)
    except Exception as exc:
        if not _is_unreachable(exc):
            raise
        log.warning(
            "cache unreachable (%s): generation %s not moved on; what was cached under it before "
            "may still be taken until its TTL runs out",
            exc,
            key,
        )

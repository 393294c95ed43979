"""portal.cache: Django's Redis cache shares one connection pool and one client per process."""

from __future__ import annotations

import threading

import pytest
from django.conf import settings
from django.core.cache import cache, caches

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="the Redis cache needs REDIS_URL (CI runs both)")


def test_the_cache_works_and_every_call_uses_the_same_client():
    cache.set("portal-cache-test", {"a": 1}, 30)
    assert cache.get_many(["portal-cache-test", "absent"]) == {"portal-cache-test": {"a": 1}}
    client = cache._cache.get_client(None)
    assert cache._cache.get_client("x", write=True) is client
    cache.delete("portal-cache-test")


def test_threads_share_the_client_and_pool():
    seen = []

    def use():
        backend = caches["default"]  # a cache object of this thread's own context
        backend.set("portal-cache-thread", 1, 30)
        seen.append(backend._cache.get_client(None))

    threads = [threading.Thread(target=use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(client) for client in seen}) == 1
    assert len({id(client.connection_pool) for client in seen}) == 1
    cache.delete("portal-cache-thread")

"""Billing fixtures: the chat catalogue, a fake runtime, and clean rate-limit state."""

from __future__ import annotations

import pytest
from django.conf import settings

# The chat fixtures, shared with the agents tests rather than written again.
from tests.agents.conftest import catalogue, eager, runtime  # noqa: F401


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    """Redis keeps GCRA state across tests (and test runs); tenant ids repeat, so start clean."""
    if not settings.REDIS_URL:
        yield
        return
    import redis

    from billing.limits import REDIS_KEY_PREFIX

    client = redis.Redis.from_url(settings.REDIS_URL)

    def clean():
        keys = list(client.scan_iter(f"{REDIS_KEY_PREFIX}*"))
        if keys:
            client.delete(*keys)

    clean()
    yield
    clean()


@pytest.fixture(params=["database", "redis"])
def limiter(request, settings):
    """Both rate limiters: the database GCRA (no REDIS_URL) and the Redis Lua script."""
    if request.param == "database":
        settings.REDIS_URL = ""
    elif not settings.REDIS_URL:
        pytest.skip("REDIS_URL is not set")
    return request.param

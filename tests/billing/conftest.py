"""Billing fixtures: the chat catalogue, a fake runtime, and clean rate-limit state."""

from __future__ import annotations

import pytest
from django.conf import settings

from tests.agents.helpers import FakeRuntime, make_catalogue


@pytest.fixture
def catalogue(world):
    return make_catalogue(world.a.tenant, world.b.tenant)


@pytest.fixture
def runtime(monkeypatch):
    fake = FakeRuntime()
    monkeypatch.setattr("agents.runtime_gateway.invoke", fake)
    return fake


@pytest.fixture
def eager(settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True


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

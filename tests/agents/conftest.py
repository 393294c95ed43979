"""Chat fixtures: the catalogue in both tenants, turns run inline, a fake runtime."""

from __future__ import annotations

import pytest

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
    """Celery tasks run inline (once the transaction commits, as in production)."""
    settings.CELERY_TASK_ALWAYS_EAGER = True

"""@tenant_task: the tenant each task runs in, and the worker's short cache of it."""

from __future__ import annotations

import pytest

from tenants import tasks
from tenants.context import current_scope
from tenants.models import Tenant


@tasks.tenant_task(name="tests.tenants.seen")
def seen(tenant: Tenant, note: str) -> tuple:
    return tenant.pk, tenant.name, tenant.tier.slug, current_scope().tenant_id, note


@pytest.fixture
def cache_forever(monkeypatch):
    monkeypatch.setattr(tasks, "TENANT_CACHE_SECONDS", 3600.0)


def test_it_runs_the_task_in_its_tenant(world):
    assert seen.run(world.a.tenant.pk, "hi") == (
        world.a.tenant.pk,
        world.a.tenant.name,
        world.a.tenant.tier.slug,
        world.a.tenant.pk,
        "hi",
    )
    assert current_scope().tenant_id is None


def test_it_is_a_quiet_no_op_for_a_tenant_that_is_gone(db):
    assert seen.run(987654, "hi") is None


def test_it_reads_a_tenant_once_while_it_is_fresh(world, cache_forever, django_assert_num_queries):
    seen.run(world.a.tenant.pk, "first")
    with django_assert_num_queries(0):
        seen.run(world.a.tenant.pk, "second")


def test_it_reads_the_tenant_again_after_a_save_in_this_process(world, cache_forever):
    seen.run(world.a.tenant.pk, "first")
    tenant = Tenant.objects.get(pk=world.a.tenant.pk)
    tenant.name = "Renamed Inc"
    tenant.save()
    assert seen.run(world.a.tenant.pk, "second")[1] == "Renamed Inc"


def test_it_reads_the_tenant_again_after_its_tier_changes(world, cache_forever):
    seen.run(world.a.tenant.pk, "first")
    tier = world.a.tenant.tier
    tier.slug = "renamed-tier"
    tier.save()
    assert seen.run(world.a.tenant.pk, "second")[2] == "renamed-tier"


def test_it_reads_the_tenant_again_once_the_cache_expires(world, monkeypatch):
    seen.run(world.a.tenant.pk, "first")
    Tenant.objects.filter(pk=world.a.tenant.pk).update(name="Changed elsewhere")  # another process: no signal
    monkeypatch.setattr(tasks, "TENANT_CACHE_SECONDS", 0.0)
    assert seen.run(world.a.tenant.pk, "second")[1] == "Changed elsewhere"


def test_each_task_gets_its_own_copy(world, cache_forever):
    first = tasks.cached_tenant(world.a.tenant.pk)
    first.name = "Changed by a task"
    assert tasks.cached_tenant(world.a.tenant.pk).name == world.a.tenant.name

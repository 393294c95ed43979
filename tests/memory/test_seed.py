"""The demo: standard and premium plans have memory, and demo members of tenants whose
memories live in the portal's table get a few (seed_demo calls seed_memory; the whole
seed takes over a minute, so its parts are tested here)."""

from __future__ import annotations

from agents.memory.seed import seed_memory
from tenants.context import tenant_context
from tenants.management.commands.seed_demo import TIERS
from tests import factories
from tests.memory.helpers import entitle, memory_catalogue, records


def test_standard_and_premium_demo_plans_have_memory():
    assert {t["slug"] for t in TIERS if "memory" in t["default_features"]} == {"standard", "premium"}


def test_the_seed_keeps_demo_members_facts_once_and_only_where_the_store_is_local(world, settings):
    settings.AGENT_RUNTIME = "agentcore"  # AWS bindings apply: B's memories are in AgentCore
    entitle(world.a.tenant, world.b.tenant)
    memory_catalogue(world.a.tenant, world.b.tenant)
    for side in (world.a, world.b):
        factories.add_member(side.tenant, factories.make_user(f"member1@{side.tenant.slug}.example"))
    world.b.tenant.deployment_model = "silo"  # its memories live in its own AgentCore Memory
    world.b.tenant.resource_bindings = {"memory_id": "bravo_memory-a1B2c3D4e5"}
    world.b.tenant.save(update_fields=["deployment_model", "resource_bindings"])

    created = seed_memory()

    seeded = records(world.a)
    with tenant_context(world.a.tenant):
        owners = {r.user.email for r in seeded}
    assert created == 3 and len(seeded) == 3 and owners == {"member1@alpha.example"}
    assert sorted(r.namespace.rsplit("/", 2)[-2:] == ["agent", "helpdesk"] for r in seeded) == [False, True, True]
    assert records(world.b) == []
    assert seed_memory() == 0

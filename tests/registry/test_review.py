"""Versions and their review: four eyes, what approving copies, audit rows."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied

from agents import services as agent_services
from agents.models import Agent, AgentStatus
from agents.registry import services
from agents.registry.models import AgentVersion, VersionState
from tenants.models import AuditLog
from tenants.services import ServiceError
from tests.registry.helpers import actor, as_operator, draft, in_tenant, own_agent


def members_see(side) -> set[int]:
    return in_tenant(side, lambda: {a.pk for a in agent_services.agents_for_members(side.tenant)})


def test_the_author_of_a_version_cannot_approve_it(world, catalogue):
    agent, version = own_agent(world.a, "admin")
    admin = actor(world.a, "admin")
    in_tenant(world.a, lambda: services.submit(admin.user, version, actor=admin))

    with pytest.raises(PermissionDenied, match="someone else must review it"):
        in_tenant(world.a, lambda: services.approve(admin.user, version, actor=admin))

    assert in_tenant(world.a, lambda: AgentVersion.objects.get(pk=version.pk).state) == VersionState.SUBMITTED
    assert in_tenant(world.a, lambda: Agent.objects.get(pk=agent.pk).status) == AgentStatus.DRAFT


def test_another_manager_approves_and_the_agent_goes_live_with_an_identity(world, catalogue):
    agent, version = own_agent(world.a, "admin")
    admin, owner = actor(world.a, "admin"), actor(world.a, "owner")
    assert agent.pk not in members_see(world.a)  # a draft agent is nobody's yet
    in_tenant(world.a, lambda: services.submit(admin.user, version, actor=admin))

    in_tenant(world.a, lambda: services.approve(owner.user, version, actor=owner))

    live = in_tenant(world.a, lambda: Agent.objects.get(pk=agent.pk))
    assert (live.status, live.published_version, live.instructions) == ("published", 1, version.instructions)
    assert live.identity_id is not None  # made on first approval; allowed in its tenant at once
    assert agent.pk in members_see(world.a)
    assert agent.pk not in members_see(world.b)


def test_a_member_without_manage_agents_can_neither_author_nor_approve(world, catalogue):
    _agent, version = own_agent(world.a, "admin")
    member = actor(world.a, "member")
    with pytest.raises(PermissionDenied):
        own_agent(world.a, "member")
    with pytest.raises(PermissionDenied):
        in_tenant(world.a, lambda: services.submit(member.user, version, actor=member))


def test_approving_supersedes_the_live_version_and_copies_the_new_fields(world, catalogue):
    agent, first = own_agent(world.a, "admin")
    admin, owner = actor(world.a, "admin"), actor(world.a, "owner")

    def publish(version):
        services.submit(admin.user, version, actor=admin)
        services.approve(owner.user, version, actor=owner)

    in_tenant(world.a, lambda: publish(first))
    second = in_tenant(
        world.a,
        lambda: services.create_version(
            admin.user, agent, draft(name="Refunds", instructions="Be brief."), actor=admin
        ),
    )
    assert second.number == 2
    assert (
        in_tenant(world.a, lambda: Agent.objects.get(pk=agent.pk).instructions) == first.instructions
    )  # a draft changes nothing
    in_tenant(world.a, lambda: publish(second))

    states = in_tenant(world.a, lambda: dict(AgentVersion.objects.values_list("number", "state")))
    live = in_tenant(world.a, lambda: Agent.objects.get(pk=agent.pk))
    assert states == {1: "superseded", 2: "approved"}
    assert (live.name, live.instructions, live.published_version) == ("Refunds", "Be brief.", 2)


def test_rejecting_needs_a_reason_and_leaves_the_agent_alone(world, catalogue):
    agent, version = own_agent(world.a, "admin")
    admin, owner = actor(world.a, "admin"), actor(world.a, "owner")
    in_tenant(world.a, lambda: services.submit(admin.user, version, actor=admin))

    with pytest.raises(ServiceError, match="reason cannot be empty"):
        in_tenant(world.a, lambda: services.reject(owner.user, version, "  ", actor=owner))
    in_tenant(world.a, lambda: services.reject(owner.user, version, "Too vague", actor=owner))

    row = in_tenant(world.a, lambda: AgentVersion.objects.get(pk=version.pk))
    assert (row.state, row.review_note, row.reviewed_by_id) == ("rejected", "Too vague", owner.user.pk)
    assert in_tenant(world.a, lambda: Agent.objects.get(pk=agent.pk).status) == AgentStatus.DRAFT
    with pytest.raises(ServiceError, match="not waiting for a review"):
        in_tenant(world.a, lambda: services.approve(owner.user, version, actor=owner))


def test_every_transition_is_audited_with_before_and_after(world, catalogue):
    _agent, version = own_agent(world.a, "admin")
    admin, owner = actor(world.a, "admin"), actor(world.a, "owner")
    in_tenant(world.a, lambda: services.submit(admin.user, version, actor=admin))
    in_tenant(world.a, lambda: services.approve(owner.user, version, actor=owner))

    rows = in_tenant(
        world.a,
        lambda: list(
            AuditLog.objects.filter(action__startswith="registry.")
            .order_by("id")
            .values_list("action", "actor_id", "before", "after")
        ),
    )
    assert [(action, actor_id) for action, actor_id, _, _ in rows] == [
        ("registry.version_created", admin.user.pk),
        ("registry.version_submitted", admin.user.pk),
        ("registry.version_approved", owner.user.pk),
    ]
    _, _, before, after = rows[-1]
    assert (before["state"], after["state"]) == ("submitted", "approved")
    assert (before["agent"]["status"], after["agent"]["status"]) == ("draft", "published")
    assert after["agent"]["published_version"] == 1


def test_a_roll_back_is_a_new_version_that_needs_a_review(world, catalogue):
    agent, first = own_agent(world.a, "admin")
    admin, owner = actor(world.a, "admin"), actor(world.a, "owner")

    def publish(version):
        services.submit(admin.user, version, actor=admin)
        services.approve(owner.user, version, actor=owner)

    in_tenant(world.a, lambda: publish(first))
    second = in_tenant(
        world.a, lambda: services.create_version(admin.user, agent, draft(instructions="New."), actor=admin)
    )
    in_tenant(world.a, lambda: publish(second))

    copy = in_tenant(world.a, lambda: services.roll_back(admin.user, first, actor=admin))
    assert (copy.number, copy.state, copy.rolled_back_from, copy.instructions) == (
        3,
        "submitted",
        1,
        first.instructions,
    )
    assert in_tenant(world.a, lambda: Agent.objects.get(pk=agent.pk).instructions) == "New."
    in_tenant(world.a, lambda: services.approve(owner.user, copy, actor=owner))
    assert in_tenant(world.a, lambda: Agent.objects.get(pk=agent.pk).instructions) == first.instructions


# --- shared agents: operators ---------------------------------------------------------------


def test_operators_author_and_approve_shared_agents_with_four_eyes(world, catalogue, operator, second_operator):
    agent, version = as_operator(
        lambda: services.create_agent(operator, draft(name="Translator", offered_to_tiers=(world.a.tenant.tier.slug,)))
    )
    assert agent.owner_tenant_id is None
    as_operator(lambda: services.submit(operator, version))
    with pytest.raises(PermissionDenied, match="someone else"):
        as_operator(lambda: services.approve(operator, version))

    as_operator(lambda: services.approve(second_operator, version))

    live = as_operator(lambda: Agent.unscoped.get(pk=agent.pk))
    assert (live.status, live.published_version, live.offered_to_tiers) == ("published", 1, [world.a.tenant.tier.slug])
    assert as_operator(lambda: AuditLog.unscoped.filter(action="registry.version_approved", tenant=None).count()) == 1


def test_a_tenant_admin_cannot_touch_a_shared_agent(world, catalogue):
    owner = actor(world.a, "owner")
    helpdesk = catalogue.helpdesk
    with pytest.raises(PermissionDenied, match="Only operators"):
        in_tenant(world.a, lambda: services.create_version(owner.user, helpdesk, draft(), actor=owner))
    assert in_tenant(world.a, lambda: services.access_own_agent(world.a.tenant, helpdesk.pk)) is None


def test_a_shared_agent_names_only_existing_tiers(world, catalogue, operator):
    with pytest.raises(ServiceError, match="Unknown tiers: gold"):
        as_operator(lambda: services.create_agent(operator, draft(offered_to_tiers=("gold",))))

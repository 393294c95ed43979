"""The Memory page: own memories per agent with delete; counts (never contents) and clear for admins."""

from __future__ import annotations

import pytest

from agents.memory.models import MemoryRecord
from agents.memory.policy import Namespace
from tenants.context import tenant_context
from tenants.models import AuditLog
from tests.memory.helpers import entitle, memory_catalogue, records


def keep(side, user, content, agent=None):
    namespace = Namespace(side.tenant.pk, user.pk, agent.slug if agent else "")
    with tenant_context(side.tenant):
        return MemoryRecord.objects.create(namespace=namespace.path, user=user, agent=agent, content=content)


@pytest.fixture
def scene(world):
    entitle(world.a.tenant, world.b.tenant)
    catalogue = memory_catalogue(world.a.tenant, world.b.tenant)
    helpdesk = catalogue.helpdesk
    return {
        "helpdesk": helpdesk,
        "mine": keep(world.a, world.a.member, "My name is Ada.", helpdesk),
        "mine_all": keep(world.a, world.a.member, "I prefer short answers."),
        "colleague": keep(world.a, world.a.owner, "Owner's private fact: the safe code is 4711.", helpdesk),
        "foreign": keep(world.b, world.b.member, "Bravo Inc member fact.", helpdesk),
    }


def test_a_member_sees_only_their_own_memories_grouped_per_agent(client, world, scene):
    client.force_login(world.a.member)
    page = client.get("/t/alpha/memory/").content.decode()
    assert "My name is Ada." in page and "I prefer short answers." in page
    assert "Helpdesk" in page and "All agents" in page
    assert "safe code" not in page and "Bravo Inc" not in page
    assert 'id="member-memory"' not in page  # no per-member counts for a member

    per_agent = client.get("/t/alpha/memory/?agent=helpdesk").content.decode()
    assert "My name is Ada." in per_agent and "I prefer short answers." not in per_agent


def test_the_memory_link_shows_for_entitled_tenants_only(client, world, scene):
    client.force_login(world.a.member)
    assert 'href="/t/alpha/memory/"' in client.get("/t/alpha/").content.decode()
    world.a.tenant.feature_grants = []
    world.a.tenant.save(update_fields=["feature_grants"])
    assert 'href="/t/alpha/memory/"' not in client.get("/t/alpha/").content.decode()
    page = client.get("/t/alpha/memory/").content.decode()
    assert 'id="memory-not-in-tier"' in page and "My name is Ada." in page  # still deletable


def test_a_member_deletes_their_own_memory_and_it_is_audited_without_its_content(client, world, scene):
    client.force_login(world.a.member)
    response = client.post(f"/t/alpha/memory/{scene['mine'].pk}/delete/")
    assert response.status_code == 302
    assert [r.content for r in records(world.a) if r.user_id == world.a.member.pk] == ["I prefer short answers."]
    with tenant_context(world.a.tenant):
        entry = AuditLog.objects.get(action="memory.deleted")
    assert entry.actor == world.a.member and "Ada" not in str(entry.after) + entry.target_repr


@pytest.mark.parametrize("target", ["colleague", "foreign"])
def test_nobody_deletes_another_members_or_tenants_memory(client, world, scene, target):
    client.force_login(world.a.admin)  # even an admin: memory contents are the member's
    response = client.post(f"/t/alpha/memory/{scene[target].pk}/delete/")
    assert response.status_code == 404
    with tenant_context(world.a.tenant):
        assert MemoryRecord.objects.filter(pk=scene["colleague"].pk).exists()
    with tenant_context(world.b.tenant):
        assert MemoryRecord.objects.filter(pk=scene["foreign"].pk).exists()


def test_admins_see_counts_per_member_but_not_contents(client, world, scene):
    client.force_login(world.a.admin)
    page = client.get("/t/alpha/memory/").content.decode()
    assert 'id="member-memory-table"' in page
    assert "member@alpha.test" in page and "owner@alpha.test" in page
    assert "My name is Ada." not in page and "safe code" not in page  # counts only
    with tenant_context(world.a.tenant):
        member = world.a.memberships["member"]
    assert f'action="/t/alpha/memory/members/{member.pk}/clear/"' in page


def test_an_admin_clears_a_members_memory_and_it_is_audited(client, world, scene):
    client.force_login(world.a.admin)
    member = world.a.memberships["member"]
    response = client.post(f"/t/alpha/memory/members/{member.pk}/clear/")
    assert response.status_code == 302
    left = records(world.a)
    assert [r.user_id for r in left] == [world.a.owner.pk]
    with tenant_context(world.a.tenant):
        entry = AuditLog.objects.get(action="memory.cleared")
    assert entry.actor == world.a.admin and entry.target_repr == "member@alpha.test" and entry.after == {"deleted": 2}
    with tenant_context(world.b.tenant):
        assert MemoryRecord.objects.count() == 1


def test_a_member_may_not_clear_anyones_memory(client, world, scene):
    client.force_login(world.a.member)
    response = client.post(f"/t/alpha/memory/members/{world.a.memberships['owner'].pk}/clear/")
    assert response.status_code == 403
    assert len(records(world.a)) == 3


def test_an_admin_may_not_clear_another_tenants_member(client, world, scene):
    client.force_login(world.a.admin)
    response = client.post(f"/t/alpha/memory/members/{world.b.memberships['member'].pk}/clear/")
    assert response.status_code == 404
    with tenant_context(world.b.tenant):
        assert MemoryRecord.objects.count() == 1


def test_the_billing_role_has_no_memory_page(client, world, scene):
    client.force_login(world.a.billing)
    assert client.get("/t/alpha/memory/").status_code == 403

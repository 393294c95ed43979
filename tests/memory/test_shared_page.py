"""The tenant's shared memory (/tenant/<t>/shared) on the Memory page.

Policy (agents/memory/policy.py): every member's agents read the shared namespace, only
owners and admins write it. So every member sees the shared facts, read-only; owners and
admins add and delete them, audited without the text (like clearing a member's memory).
"""

from __future__ import annotations

import pytest

from agents.memory.models import MemoryRecord
from agents.memory.policy import Namespace
from tenants.context import tenant_context
from tenants.models import AuditLog
from tests.memory.helpers import entitle, memory_catalogue

SHARED_FACT = "Our support hours are 9 to 17 CET."


def share(side, content):
    with tenant_context(side.tenant):
        return MemoryRecord.objects.create(namespace=Namespace(side.tenant.pk).path, content=content)


def shared_texts(side) -> list[str]:
    with tenant_context(side.tenant):
        return list(
            MemoryRecord.objects.filter(namespace=Namespace(side.tenant.pk).path).values_list("content", flat=True)
        )


@pytest.fixture
def scene(world):
    entitle(world.a.tenant, world.b.tenant)
    memory_catalogue(world.a.tenant, world.b.tenant)
    return {"ours": share(world.a, SHARED_FACT), "theirs": share(world.b, "Bravo Inc shared secret.")}


def test_a_member_sees_the_shared_memories_read_only(client, world, scene):
    client.force_login(world.a.member)
    page = client.get("/t/alpha/memory/").content.decode()
    assert 'id="shared-memory"' in page and SHARED_FACT in page
    assert "Bravo Inc" not in page
    assert f"/t/alpha/memory/shared/{scene['ours'].pk}/delete/" not in page
    assert 'id="shared-memory-form"' not in page


def test_an_admin_adds_a_shared_memory_audited_without_its_text(client, world, scene):
    client.force_login(world.a.admin)
    page = client.get("/t/alpha/memory/").content.decode()
    assert 'id="shared-memory-form"' in page
    response = client.post("/t/alpha/memory/shared/", {"content": "  The office is   closed on Fridays. "})
    assert response.status_code == 302
    assert sorted(shared_texts(world.a)) == sorted([SHARED_FACT, "The office is closed on Fridays."])
    with tenant_context(world.a.tenant):
        entry = AuditLog.objects.get(action="memory.shared_added")
    assert entry.actor == world.a.admin
    assert entry.target_repr.startswith(f"/tenant/{world.a.tenant.pk}/shared #")
    assert "Fridays" not in f"{entry.target_repr} {entry.before} {entry.after}"
    assert "The office is closed on Fridays." in client.get("/t/alpha/memory/").content.decode()


def test_an_owner_deletes_a_shared_memory_audited(client, world, scene):
    client.force_login(world.a.owner)
    page = client.get("/t/alpha/memory/").content.decode()
    assert f"/t/alpha/memory/shared/{scene['ours'].pk}/delete/" in page
    assert client.post(f"/t/alpha/memory/shared/{scene['ours'].pk}/delete/").status_code == 302
    assert shared_texts(world.a) == []
    with tenant_context(world.a.tenant):
        entry = AuditLog.objects.get(action="memory.shared_deleted")
    assert entry.actor == world.a.owner and "support hours" not in f"{entry.target_repr} {entry.after}"


@pytest.mark.parametrize("role", ["member", "billing"])
def test_a_member_may_neither_add_nor_delete_shared_memories(client, world, scene, role):
    client.force_login(world.a.user(role))
    assert client.post("/t/alpha/memory/shared/", {"content": "Sneaky."}).status_code == 403
    assert client.post(f"/t/alpha/memory/shared/{scene['ours'].pk}/delete/").status_code == 403
    assert shared_texts(world.a) == [SHARED_FACT]


@pytest.mark.parametrize("content", ["", "   ", "x" * 1001])
def test_an_empty_or_too_long_fact_is_a_form_error(client, world, scene, content):
    client.force_login(world.a.admin)
    response = client.post("/t/alpha/memory/shared/", {"content": content})
    assert response.status_code == 400
    assert 'class="errorlist' in response.content.decode() or "field-error" in response.content.decode()
    assert shared_texts(world.a) == [SHARED_FACT]


def test_another_tenants_shared_memory_is_not_found(client, world, scene):
    client.force_login(world.a.owner)
    assert client.post(f"/t/alpha/memory/shared/{scene['theirs'].pk}/delete/").status_code == 404
    assert shared_texts(world.b) == ["Bravo Inc shared secret."]


def test_a_members_own_memory_cannot_be_deleted_as_a_shared_one(client, world, scene):
    with tenant_context(world.a.tenant):
        own = MemoryRecord.objects.create(
            namespace=Namespace(world.a.tenant.pk, world.a.member.pk).path, user=world.a.member, content="Mine."
        )
    client.force_login(world.a.owner)
    assert client.post(f"/t/alpha/memory/shared/{own.pk}/delete/").status_code == 404
    with tenant_context(world.a.tenant):
        assert MemoryRecord.objects.filter(pk=own.pk).exists()

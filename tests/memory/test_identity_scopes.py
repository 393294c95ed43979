"""An agent whose workload identity may not use memory:read and memory:write neither recalls
nor remembers (the turn's token exchange asks for the memory scopes only when the identity
allows both). The Memory page tells owners and admins which agents those are and which
scopes an operator must grant, instead of letting them rely on memory that never happens."""

from __future__ import annotations

import pytest

from tests.agents.helpers import make_catalogue
from tests.memory.helpers import entitle, memory_catalogue


@pytest.fixture
def entitled(world):
    entitle(world.a.tenant, world.b.tenant)


def test_it_tells_an_admin_which_agent_cannot_use_memory_and_the_missing_scopes(client, world, entitled):
    helpdesk = make_catalogue(world.a.tenant, world.b.tenant).helpdesk  # identity: agents:invoke kb:read
    client.force_login(world.a.admin)
    page = client.get("/t/alpha/memory/").content.decode()
    assert f'id="agent-{helpdesk.pk}-cannot-use-memory"' in page
    assert "Helpdesk neither recalls nor remembers" in page
    assert "<code>memory:read</code>" in page and "<code>memory:write</code>" in page


def test_it_names_only_the_scope_that_is_missing(client, world, entitled):
    helpdesk = make_catalogue(world.a.tenant, world.b.tenant).helpdesk
    identity = helpdesk.identity
    identity.allowed_scopes = [*identity.allowed_scopes, "memory:read"]
    identity.save(update_fields=["allowed_scopes"])
    client.force_login(world.a.owner)
    page = client.get("/t/alpha/memory/").content.decode()
    assert f'id="agent-{helpdesk.pk}-cannot-use-memory"' in page
    assert "<code>memory:write</code>" in page and "<code>memory:read</code>" not in page


def test_it_says_nothing_when_the_identity_may_use_memory(client, world, entitled):
    memory_catalogue(world.a.tenant, world.b.tenant)
    client.force_login(world.a.admin)
    assert "cannot-use-memory" not in client.get("/t/alpha/memory/").content.decode()


def test_a_member_does_not_get_the_operators_to_do(client, world, entitled):
    make_catalogue(world.a.tenant, world.b.tenant)
    client.force_login(world.a.member)
    assert "cannot-use-memory" not in client.get("/t/alpha/memory/").content.decode()

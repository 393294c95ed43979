"""The memory gateway agents call with their act-on-behalf token: recall and remember.

Every refusal is problem JSON; what a token reaches is its own member's namespaces
(and the tenant's shared one) in its own tenant, only with the memory scopes, only on
a plan with memory.
"""

from __future__ import annotations

import pytest

from agents.memory.models import MemoryRecord
from agents.models import Invocation
from tenants.context import tenant_context
from tenants.identity import oauth, tokens
from tests.memory.helpers import RECALL, REMEMBER, entitle, memory_catalogue, post, records, token_for, turn


@pytest.fixture
def scene(world):
    entitle(world.a.tenant, world.b.tenant)
    catalogue = memory_catalogue(world.a.tenant, world.b.tenant)
    return {
        "catalogue": catalogue,
        "a_member": turn(world.a, world.a.member, catalogue, status="running"),
        "a_owner": turn(world.a, world.a.owner, catalogue, status="running"),
        "b_member": turn(world.b, world.b.member, catalogue, status="running"),
    }


def test_remember_stores_one_record_in_the_members_agent_namespace(client, world, scene):
    response = post(
        client, REMEMBER, token_for(world.a, scene["a_member"]), content="My name is Ada.", agent="helpdesk"
    )

    assert response.status_code == 201, response.content
    body = response.json()
    path = f"/tenant/{world.a.tenant.pk}/user/{world.a.member.pk}/agent/helpdesk"
    assert body["namespace"] == path and body["content"] == "My name is Ada."
    [record] = records(world.a)
    assert (record.namespace, record.user_id, record.agent_id) == (
        path,
        world.a.member.pk,
        scene["catalogue"].helpdesk.pk,
    )
    assert record.source_invocation_id == scene["a_member"].pk  # the turn in progress stored it


def test_recall_answers_the_members_own_matching_memories(client, world, scene):
    token = token_for(world.a, scene["a_member"])
    post(client, REMEMBER, token, content="My name is Ada.")
    post(client, REMEMBER, token, content="I prefer short answers.", scope="user")

    response = post(client, RECALL, token, query="What is my name?", k=5, agent="helpdesk")

    assert response.status_code == 200
    assert [m["content"] for m in response.json()["memories"]] == ["My name is Ada."]
    preference = post(client, RECALL, token, query="short or long answers?").json()["memories"]
    assert [m["content"] for m in preference] == ["I prefer short answers."]


def test_recall_never_answers_another_members_memories(client, world, scene):
    post(client, REMEMBER, token_for(world.a, scene["a_owner"]), content="My name is Olivia the owner.")
    post(client, REMEMBER, token_for(world.a, scene["a_owner"]), content="My name is Olivia.", scope="user")

    response = post(client, RECALL, token_for(world.a, scene["a_member"]), query="What is my name Olivia owner?")

    assert response.status_code == 200
    assert response.json()["memories"] == []


def test_recall_never_answers_another_tenants_memories(client, world, scene):
    post(client, REMEMBER, token_for(world.b, scene["b_member"]), content="My name is Bruno from bravo.")

    response = post(client, RECALL, token_for(world.a, scene["a_member"]), query="my name Bruno bravo")

    assert response.json()["memories"] == []
    # ... and a token of A cannot be pointed at B by the body.
    refused = post(
        client, RECALL, token_for(world.a, scene["a_member"]), query="Bruno", tenant_id=str(world.b.tenant.pk)
    )
    assert refused.status_code == 403
    assert refused["Content-Type"] == "application/problem+json"
    assert "Bruno" not in refused.content.decode()


def test_the_shared_namespace_is_read_by_all_and_written_by_admins_only(client, world, scene):
    member = post(
        client, REMEMBER, token_for(world.a, scene["a_member"]), content="The office is in Lisbon.", scope="shared"
    )
    assert member.status_code == 403
    assert "owner or admin" in member.json()["detail"]

    owner = post(
        client, REMEMBER, token_for(world.a, scene["a_owner"]), content="The office is in Lisbon.", scope="shared"
    )
    assert owner.status_code == 201
    assert owner.json()["namespace"] == f"/tenant/{world.a.tenant.pk}/shared"

    recalled = post(client, RECALL, token_for(world.a, scene["a_member"]), query="Where is the office?").json()
    assert [m["content"] for m in recalled["memories"]] == ["The office is in Lisbon."]
    other_tenant = post(client, RECALL, token_for(world.b, scene["b_member"]), query="Where is the office?").json()
    assert other_tenant["memories"] == []


def narrow_token(side, invocation, scope: str) -> str:
    with tenant_context(side.tenant):
        invocation = Invocation.objects.select_related("agent__identity").get(pk=invocation.pk)
    return oauth.token_exchange(
        client=oauth.AuthenticatedClient(agent=invocation.agent.identity),
        subject_token=tokens.issue_user_token(side.member, side.tenant),
        subject_token_type=oauth.TOKEN_TYPE_ACCESS,
        actor_token=None,
        actor_token_type=None,
        audiences=["agent-runtime"],
        resources=[],
        scope=scope,
        requested_token_type=oauth.TOKEN_TYPE_ACCESS,
    )["access_token"]


def test_recall_needs_memory_read_and_remember_needs_memory_write(client, world, scene):
    write_only = narrow_token(world.a, scene["a_member"], "agents:invoke memory:write")
    read_only = narrow_token(world.a, scene["a_member"], "agents:invoke memory:read")

    no_read = post(client, RECALL, write_only, query="name")
    no_write = post(client, REMEMBER, read_only, content="My name is Ada.")

    assert (no_read.status_code, no_write.status_code) == (403, 403)
    assert "memory:read" in no_read.json()["detail"] and "memory:write" in no_write.json()["detail"]
    assert records(world.a) == []


def test_a_tenant_without_the_feature_gets_no_memory_scopes_and_no_memory(client, world, scene):
    token = token_for(world.a, scene["a_member"])  # minted while entitled
    world.a.tenant.feature_grants = []
    world.a.tenant.save(update_fields=["feature_grants"])

    assert post(client, RECALL, token, query="name").status_code == 403
    assert post(client, REMEMBER, token, content="My name is Ada.").status_code == 403
    unentitled = tokens.decode(token_for(world.a, scene["a_member"]), audience="agent-runtime")
    assert "memory:read" not in unentitled["scope"].split()
    assert records(world.a) == []


def test_an_entitled_tenants_token_carries_the_memory_scopes(world, scene):
    claims = tokens.decode(token_for(world.a, scene["a_member"]), audience="agent-runtime")
    assert {"memory:read", "memory:write", "kb:read"} <= set(claims["scope"].split())


def test_an_identity_not_allowed_memory_still_gets_its_turn_token_without_it(world, scene):
    identity = scene["catalogue"].helpdesk.identity
    identity.allowed_scopes = ["agents:invoke", "kb:read"]
    identity.save(update_fields=["allowed_scopes"])

    claims = tokens.decode(token_for(world.a, scene["a_member"]), audience="agent-runtime")

    assert set(claims["scope"].split()) == {"agents:invoke", "kb:read"}


def test_a_user_token_that_was_not_exchanged_is_refused(client, world, scene):
    user_token = tokens.issue_user_token(world.a.member, world.a.tenant)
    assert post(client, RECALL, user_token, query="name").status_code == 401
    assert post(client, REMEMBER, user_token, content="x").status_code == 401


@pytest.mark.parametrize(
    ("url", "body"),
    [
        (RECALL, {}),
        (RECALL, {"query": ""}),
        (RECALL, {"query": "name", "k": 0}),
        (RECALL, {"query": "name", "k": "many"}),
        (REMEMBER, {}),
        (REMEMBER, {"content": "   "}),
        (REMEMBER, {"content": "x" * 1001}),
        (REMEMBER, {"content": "fact", "scope": "everyone"}),
        (REMEMBER, {"content": ["not", "text"]}),
        (REMEMBER, {"content": "fact", "agent": "no such agent!"}),
    ],
)
def test_bad_bodies_get_problem_json_never_a_500(client, world, scene, url, body):
    response = post(client, url, token_for(world.a, scene["a_member"]), **body)
    assert response.status_code == 400, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    assert records(world.a) == []


def test_a_missing_or_garbage_token_is_refused(client, world, scene):
    assert post(client, RECALL, None, query="name").status_code in (401, 403)
    response = post(client, REMEMBER, "garbage", content="fact")
    assert response.status_code == 401
    assert response.json()["status"] == 401


def test_an_agent_the_token_does_not_name_is_refused(client, world, scene):
    response = post(client, REMEMBER, token_for(world.a, scene["a_member"]), content="fact", agent="hidden")
    assert response.status_code == 403
    with tenant_context(world.a.tenant):
        assert not MemoryRecord.objects.exists()

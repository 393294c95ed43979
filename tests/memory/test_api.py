"""Long-term memory over the tenant REST API (/api/v1/tenants/<slug>/memories/), portal store.

What a person may do here is what the Memory page lets them do, decided by the same policy
(agents/memory/policy.py) through the same services:

* list their own memories and the tenant's shared ones (never a colleague's), filtered by
  scope (mine | shared), agent and text, a page at a time;
* add one of their own (for one agent, or for all), or a shared one (owners and admins);
* delete one of their own, or a shared one (owners and admins); a colleague's or another
  tenant's record is "not found", never "forbidden";
* owners and admins see how many memories each member has (never the contents) and clear
  a member's memories.

A token needs memory:read to read and memory:write to change; an API client (no person
behind it) has no memories and is refused. Every change is audited with the page's labels.
"""

from __future__ import annotations

import json

import pytest

from agents.memory.models import MemoryRecord
from agents.memory.policy import Namespace
from tenants.context import tenant_context
from tenants.identity.tokens import issue_user_token
from tenants.models import AuditLog
from tests.factories import client_token
from tests.memory.helpers import entitle, memory_catalogue, records

URL = "/api/v1/tenants/{slug}/memories/"
MEMBERS = "/api/v1/tenants/{slug}/memory-members/"


def keep(side, user, content, agent=None):
    namespace = Namespace(side.tenant.pk, user.pk if user else None, agent.slug if agent else "")
    with tenant_context(side.tenant):
        return MemoryRecord.objects.create(namespace=namespace.path, user=user, agent=agent, content=content)


def bearer(side, user, scopes=None):
    token = issue_user_token(user, side.tenant, scopes=frozenset(scopes) if scopes is not None else None)
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def call(client, method, url, headers, body=None):
    data = json.dumps(body) if body is not None else None
    return client.generic(method, url, data=data or "", content_type="application/json", **headers)


def audited(side, action):
    with tenant_context(side.tenant):
        return list(AuditLog.objects.filter(action=action))


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
        "shared": keep(world.a, None, "Support hours are 9 to 17 CET."),
        "foreign": keep(world.b, world.b.member, "Bravo Inc member fact.", helpdesk),
        "foreign_shared": keep(world.b, None, "Bravo Inc shared fact."),
    }


def contents(response):
    return sorted(row["content"] for row in response.json()["results"])


# --- listing --------------------------------------------------------------------------------------


def test_it_lists_the_callers_own_and_the_shared_memories_a_page_at_a_time(client, world, scene):
    response = client.get(URL.format(slug="alpha"), **bearer(world.a, world.a.member))
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 3
    assert contents(response) == ["I prefer short answers.", "My name is Ada.", "Support hours are 9 to 17 CET."]
    by_content = {row["content"]: row for row in body["results"]}
    ada = by_content["My name is Ada."]
    assert ada == {
        "id": str(scene["mine"].pk),
        "content": "My name is Ada.",
        "scope": "agent",
        "agent": "helpdesk",
        "namespace": f"/tenant/{world.a.tenant.pk}/user/{world.a.member.pk}/agent/helpdesk",
        "created_at": ada["created_at"],
    }
    assert by_content["Support hours are 9 to 17 CET."]["scope"] == "shared"
    assert by_content["I prefer short answers."]["scope"] == "user"

    page = client.get(URL.format(slug="alpha") + "?limit=1&offset=1", **bearer(world.a, world.a.member)).json()
    assert page["count"] == 3 and len(page["results"]) == 1 and page["previous"] is not None


def test_it_filters_by_scope_agent_and_text(client, world, scene):
    headers = bearer(world.a, world.a.member)
    url = URL.format(slug="alpha")
    assert contents(client.get(url + "?scope=mine", **headers)) == ["I prefer short answers.", "My name is Ada."]
    assert contents(client.get(url + "?scope=shared", **headers)) == ["Support hours are 9 to 17 CET."]
    assert contents(client.get(url + "?agent=helpdesk", **headers)) == ["My name is Ada."]
    assert contents(client.get(url + "?q=SHORT", **headers)) == ["I prefer short answers."]


@pytest.mark.parametrize("query", ["scope=everyone", "agent=nobody"])
def test_an_unknown_filter_value_is_a_400_problem_naming_it(client, world, scene, query):
    response = client.get(URL.format(slug="alpha") + "?" + query, **bearer(world.a, world.a.member))
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert query.split("=")[0] in response.json()["errors"]


def test_an_admin_lists_none_of_a_colleagues_memories(client, world, scene):
    response = client.get(URL.format(slug="alpha"), **bearer(world.a, world.a.admin))
    assert contents(response) == ["Support hours are 9 to 17 CET."]


# --- adding ---------------------------------------------------------------------------------------


def test_a_member_adds_a_memory_for_one_agent_and_it_is_audited_without_its_text(client, world, scene):
    body = {"content": "  I work   in Lyon. ", "scope": "agent", "agent": "helpdesk"}
    response = call(client, "POST", URL.format(slug="alpha"), bearer(world.a, world.a.member), body)
    assert response.status_code == 201
    created = response.json()
    namespace = f"/tenant/{world.a.tenant.pk}/user/{world.a.member.pk}/agent/helpdesk"
    assert created["content"] == "I work in Lyon." and created["namespace"] == namespace
    with tenant_context(world.a.tenant):
        record = MemoryRecord.objects.get(pk=int(created["id"]))
    assert record.user == world.a.member and record.agent == scene["helpdesk"]
    [entry] = audited(world.a, "memory.added")
    assert entry.actor == world.a.member and entry.target_repr == f"{namespace} #{record.pk}"
    assert "Lyon" not in f"{entry.target_repr} {entry.before} {entry.after}"


def test_a_memory_for_all_agents_needs_no_agent(client, world, scene):
    body = {"content": "Call me Ada.", "scope": "user"}
    response = call(client, "POST", URL.format(slug="alpha"), bearer(world.a, world.a.member), body)
    assert response.status_code == 201
    assert response.json()["namespace"] == f"/tenant/{world.a.tenant.pk}/user/{world.a.member.pk}"


def test_an_admin_adds_a_shared_memory_with_the_pages_audit_label(client, world, scene):
    body = {"content": "The office is closed on Fridays.", "scope": "shared"}
    response = call(client, "POST", URL.format(slug="alpha"), bearer(world.a, world.a.admin), body)
    assert response.status_code == 201
    assert response.json()["scope"] == "shared"
    [entry] = audited(world.a, "memory.shared_added")
    assert entry.actor == world.a.admin


def test_a_member_may_not_add_a_shared_memory(client, world, scene):
    body = {"content": "The office is closed on Fridays.", "scope": "shared"}
    response = call(client, "POST", URL.format(slug="alpha"), bearer(world.a, world.a.member), body)
    assert response.status_code == 403
    assert "owner or admin" in response.json()["detail"]
    assert len(records(world.a)) == 4


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"content": "   ", "scope": "user"}, "content"),
        ({"content": "x" * 1001, "scope": "user"}, "content"),
        ({"content": "Fact.", "scope": "agent"}, "agent"),
        ({"content": "Fact.", "scope": "agent", "agent": "nobody"}, "agent"),
        ({"content": "Fact.", "scope": "everyone"}, "scope"),
    ],
)
def test_bad_input_is_a_400_problem_naming_the_field(client, world, scene, body, field):
    response = call(client, "POST", URL.format(slug="alpha"), bearer(world.a, world.a.member), body)
    assert response.status_code == 400
    assert field in response.json()["errors"]
    assert len(records(world.a)) == 4


def test_a_tenant_whose_plan_lacks_memory_adds_nothing(client, world, scene):
    world.a.tenant.feature_grants = []
    world.a.tenant.save(update_fields=["feature_grants"])
    body = {"content": "Call me Ada.", "scope": "user"}
    response = call(client, "POST", URL.format(slug="alpha"), bearer(world.a, world.a.member), body)
    assert response.status_code == 403
    assert "not part of" in response.json()["detail"]
    # What was kept before stays listed, so that it can be deleted.
    assert client.get(URL.format(slug="alpha"), **bearer(world.a, world.a.member)).json()["count"] == 3


# --- deleting -------------------------------------------------------------------------------------


def test_a_member_deletes_their_own_memory(client, world, scene):
    url = URL.format(slug="alpha") + f"{scene['mine'].pk}/"
    response = call(client, "DELETE", url, bearer(world.a, world.a.member))
    assert response.status_code == 204
    assert scene["mine"].pk not in [r.pk for r in records(world.a)]
    [entry] = audited(world.a, "memory.deleted")
    assert entry.actor == world.a.member


def test_an_admin_deletes_a_shared_memory_and_a_member_may_not(client, world, scene):
    url = URL.format(slug="alpha") + f"{scene['shared'].pk}/"
    assert call(client, "DELETE", url, bearer(world.a, world.a.member)).status_code == 403
    assert call(client, "DELETE", url, bearer(world.a, world.a.admin)).status_code == 204
    [entry] = audited(world.a, "memory.shared_deleted")
    assert entry.actor == world.a.admin


@pytest.mark.parametrize("target", ["colleague", "foreign", "foreign_shared"])
def test_another_members_or_tenants_memory_is_not_found_even_for_an_admin(client, world, scene, target):
    url = URL.format(slug="alpha") + f"{scene[target].pk}/"
    response = call(client, "DELETE", url, bearer(world.a, world.a.admin))
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert len(records(world.a)) == 4 and len(records(world.b)) == 2


def test_tenant_b_cannot_delete_tenant_as_memory_by_id_under_either_slug(client, world, scene):
    headers = bearer(world.b, world.b.owner)
    for slug in ("bravo", "alpha"):
        for record in ("shared", "mine"):
            response = call(client, "DELETE", URL.format(slug=slug) + f"{scene[record].pk}/", headers)
            assert response.status_code == 404
    assert len(records(world.a)) == 4
    assert "Ada" not in client.get(URL.format(slug="bravo"), **headers).content.decode()


@pytest.mark.parametrize("record_id", ["0", "abc", "mem-short", "9" * 30])
def test_an_id_that_names_no_record_is_not_found(client, world, scene, record_id):
    response = call(client, "DELETE", URL.format(slug="alpha") + f"{record_id}/", bearer(world.a, world.a.member))
    assert response.status_code == 404


# --- who may call ---------------------------------------------------------------------------------


def test_reading_needs_memory_read_and_changing_needs_memory_write(client, world, scene):
    url = URL.format(slug="alpha")
    read_only = bearer(world.a, world.a.member, {"memory:read"})
    assert client.get(url, **read_only).status_code == 200
    refused = call(client, "POST", url, read_only, {"content": "Call me Ada.", "scope": "user"})
    assert refused.status_code == 403 and "memory:write" in refused.json()["detail"]
    refused = call(client, "DELETE", url + f"{scene['mine'].pk}/", read_only)
    assert refused.status_code == 403
    chat_only = bearer(world.a, world.a.member, {"agents:invoke"})
    assert client.get(url, **chat_only).status_code == 403
    assert len(records(world.a)) == 4


def test_a_signed_in_session_may_use_it(client, world, scene):
    client.force_login(world.a.member)
    assert contents(client.get(URL.format(slug="alpha")))[0] == "I prefer short answers."


def test_an_api_client_has_no_memories(client, world, scene):
    token = client_token(world.a.tenant, world.a.owner, {"memory:read", "memory:write", "tenant:read"})
    response = client.get(URL.format(slug="alpha"), HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 403
    assert "member" in response.json()["detail"]


def test_the_billing_role_has_no_memories(client, world, scene):
    assert client.get(URL.format(slug="alpha"), **bearer(world.a, world.a.billing)).status_code == 403


# --- members' memories, for owners and admins -----------------------------------------------------


def test_an_admin_sees_counts_per_member_but_never_contents(client, world, scene):
    response = client.get(MEMBERS.format(slug="alpha"), **bearer(world.a, world.a.admin))
    assert response.status_code == 200
    rows = {row["email"]: row for row in response.json()["results"]}
    assert rows["member@alpha.test"]["count"] == 2 and rows["owner@alpha.test"]["count"] == 1
    assert rows["member@alpha.test"]["membership_id"] == world.a.memberships["member"].pk
    assert "Ada" not in response.content.decode() and "safe code" not in response.content.decode()


def test_an_admin_clears_a_members_memories_with_the_pages_audit_label(client, world, scene):
    member = world.a.memberships["member"]
    url = MEMBERS.format(slug="alpha") + f"{member.pk}/clear/"
    response = call(client, "POST", url, bearer(world.a, world.a.admin))
    assert response.status_code == 200
    assert response.json() == {
        "deleted": 2,
        "failed": 0,
        "more": False,
        "detail": "2 memories of member@alpha.test cleared.",
    }
    assert sorted(r.user_id or 0 for r in records(world.a)) == [0, world.a.owner.pk]
    [entry] = audited(world.a, "memory.cleared")
    assert entry.actor == world.a.admin and entry.after == {"deleted": 2}


def test_a_member_may_neither_count_nor_clear(client, world, scene):
    headers = bearer(world.a, world.a.member)
    assert client.get(MEMBERS.format(slug="alpha"), **headers).status_code == 403
    url = MEMBERS.format(slug="alpha") + f"{world.a.memberships['owner'].pk}/clear/"
    assert call(client, "POST", url, headers).status_code == 403
    assert len(records(world.a)) == 4


def test_an_admin_may_not_clear_another_tenants_member(client, world, scene):
    url = MEMBERS.format(slug="alpha") + f"{world.b.memberships['member'].pk}/clear/"
    assert call(client, "POST", url, bearer(world.a, world.a.admin)).status_code == 404
    assert len(records(world.b)) == 2

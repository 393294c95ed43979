"""The memory REST API for a silo tenant bound to AgentCore Memory.

The same endpoints as tests/memory/test_api.py, answered from the tenant's own AgentCore
Memory through stores.AgentCoreStore (botocore's Stubber checks every request against the
real service model, with the parameters pinned):

* listing: ListMemoryRecords of the member's namespaces and of the shared one;
* adding: BatchCreateMemoryRecords with one record in the namespace the policy gives;
* deleting: GetMemoryRecord in the tenant's own memory first, DeleteMemoryRecord only for
  a namespace the caller may write (a colleague's or another tenant's record is 404);
* members: one member's count by walking ListMemoryRecords (nextToken) up to a cap, and
  clearing with BatchDeleteMemoryRecords;
* AWS failing is a 503 problem (waiting helps, Retry-After) or a 502 (the set-up must be
  fixed), with a clear detail; never a 500.
"""

from __future__ import annotations

import json

import pytest
from botocore.stub import ANY, Stubber

from agents.memory import services, stores
from tenants.context import tenant_context
from tenants.identity.tokens import issue_user_token
from tests.knowledge.helpers import actor_for
from tests.memory.helpers import entitle, memory_catalogue
from tests.memory.test_agentcore_manage import (
    FACT,
    MEMORY_A,
    MEMORY_B,
    RECORD,
    audited,
    bind,
    client_without_credentials,
    client_without_network,
    fake_client,
    listing,
    local_records,
    record,
    summary,
)

URL = "/api/v1/tenants/{slug}/memories/"
MEMBERS = "/api/v1/tenants/{slug}/memory-members/"


def rid(n: int) -> str:
    return f"mem-{n:040d}"


def bearer(side, user):
    return {"HTTP_AUTHORIZATION": f"Bearer {issue_user_token(user, side.tenant)}"}


def call(client, method, url, headers, body=None):
    data = json.dumps(body) if body is not None else ""
    return client.generic(method, url, data=data, content_type="application/json", **headers)


@pytest.fixture(autouse=True)
def _aws_bindings_apply(settings):
    settings.AGENT_RUNTIME = "agentcore"  # AWS bindings apply (not the embedded local runtime)


@pytest.fixture
def silo(world, monkeypatch):
    entitle(world.a.tenant, world.b.tenant)
    memory_catalogue(world.a.tenant, world.b.tenant)
    bind(world.a.tenant, MEMORY_A)
    client = fake_client()
    monkeypatch.setattr(stores, "make_client", lambda region: client)
    with Stubber(client) as stub:
        yield stub
        stub.assert_no_pending_responses()


def test_it_lists_the_members_and_the_shared_records_from_agentcore(client, world, silo):
    t, u = world.a.tenant.pk, world.a.member.pk
    silo.add_response(
        "list_memory_records",
        listing(
            summary(rid(1), "My name is Ada.", f"/tenant/{t}/user/{u}/agent/helpdesk"),
            summary(rid(2), "A colleague's fact.", f"/tenant/{t}/user/{u + 1000}"),  # never answered
        ),
        {"memoryId": MEMORY_A, "namespacePath": f"/tenant/{t}/user/{u}", "maxResults": 100},
    )
    silo.add_response(
        "list_memory_records",
        listing(summary(RECORD, FACT, f"/tenant/{t}/shared")),
        {"memoryId": MEMORY_A, "namespace": f"/tenant/{t}/shared", "maxResults": 100},
    )
    response = client.get(URL.format(slug="alpha"), **bearer(world.a, world.a.member))
    assert response.status_code == 200
    rows = {row["id"]: row for row in response.json()["results"]}
    assert set(rows) == {rid(1), RECORD}
    assert rows[rid(1)]["scope"] == "agent" and rows[rid(1)]["agent"] == "helpdesk"
    assert rows[RECORD]["scope"] == "shared" and rows[RECORD]["content"] == FACT


def test_it_filters_agentcores_records_by_scope_and_text(client, world, silo):
    t, u = world.a.tenant.pk, world.a.member.pk
    for _ in range(2):
        silo.add_response("list_memory_records", listing(summary(rid(1), "My name is Ada.", f"/tenant/{t}/user/{u}")))
        silo.add_response("list_memory_records", listing(summary(RECORD, FACT, f"/tenant/{t}/shared")))
    headers = bearer(world.a, world.a.member)
    shared = client.get(URL.format(slug="alpha") + "?scope=shared", **headers).json()["results"]
    assert [row["id"] for row in shared] == [RECORD]
    found = client.get(URL.format(slug="alpha") + "?q=ADA", **headers).json()["results"]
    assert [row["id"] for row in found] == [rid(1)]


def test_a_member_adds_a_record_in_their_namespace_for_the_agent(client, world, silo):
    namespace = f"/tenant/{world.a.tenant.pk}/user/{world.a.member.pk}/agent/helpdesk"
    silo.add_response(
        "batch_create_memory_records",
        {
            "successfulRecords": [{"memoryRecordId": RECORD, "status": "SUCCEEDED", "requestIdentifier": "portal-1"}],
            "failedRecords": [],
        },
        {
            "memoryId": MEMORY_A,
            "records": [
                {"requestIdentifier": ANY, "namespaces": [namespace], "content": {"text": FACT}, "timestamp": ANY}
            ],
            "clientToken": ANY,
        },
    )
    body = {"content": FACT, "agent": "helpdesk"}
    response = call(client, "POST", URL.format(slug="alpha"), bearer(world.a, world.a.member), body)
    assert response.status_code == 201
    assert response.json()["id"] == RECORD and response.json()["namespace"] == namespace
    [entry] = audited(world.a, "memory.added")
    assert entry.target_repr == f"{namespace} #{RECORD}" and entry.after == {"store": "agentcore"}
    assert local_records(world.a) == []


def test_a_member_deletes_their_own_record(client, world, silo):
    namespace = f"/tenant/{world.a.tenant.pk}/user/{world.a.member.pk}"
    silo.add_response("get_memory_record", record(namespace), {"memoryId": MEMORY_A, "memoryRecordId": RECORD})
    silo.add_response(
        "delete_memory_record",
        {"memoryRecordId": RECORD},
        {"memoryId": MEMORY_A, "memoryRecordId": RECORD, "namespace": namespace},
    )
    response = call(client, "DELETE", URL.format(slug="alpha") + f"{RECORD}/", bearer(world.a, world.a.member))
    assert response.status_code == 204
    [entry] = audited(world.a, "memory.deleted")
    assert entry.actor == world.a.member


def test_an_admin_deletes_a_shared_record_with_the_pages_label(client, world, silo):
    shared = f"/tenant/{world.a.tenant.pk}/shared"
    silo.add_response("get_memory_record", record(shared), {"memoryId": MEMORY_A, "memoryRecordId": RECORD})
    silo.add_response(
        "delete_memory_record",
        {"memoryRecordId": RECORD},
        {"memoryId": MEMORY_A, "memoryRecordId": RECORD, "namespace": shared},
    )
    response = call(client, "DELETE", URL.format(slug="alpha") + f"{RECORD}/", bearer(world.a, world.a.admin))
    assert response.status_code == 204
    assert [e.actor for e in audited(world.a, "memory.shared_deleted")] == [world.a.admin]


def test_a_member_may_read_but_not_delete_a_shared_record(client, world, silo):
    shared = f"/tenant/{world.a.tenant.pk}/shared"
    silo.add_response("get_memory_record", record(shared), {"memoryId": MEMORY_A, "memoryRecordId": RECORD})
    # No delete_memory_record is stubbed: calling it would fail the test.
    response = call(client, "DELETE", URL.format(slug="alpha") + f"{RECORD}/", bearer(world.a, world.a.member))
    assert response.status_code == 403


def test_a_colleagues_record_is_not_found_even_for_an_admin(client, world, silo):
    theirs = f"/tenant/{world.a.tenant.pk}/user/{world.a.member.pk}"
    silo.add_response("get_memory_record", record(theirs), {"memoryId": MEMORY_A, "memoryRecordId": RECORD})
    response = call(client, "DELETE", URL.format(slug="alpha") + f"{RECORD}/", bearer(world.a, world.a.owner))
    assert response.status_code == 404


def test_tenant_b_cannot_delete_tenant_as_record_by_its_id(client, world, silo):
    """Bravo's owner names Alpha's record: only Bravo's own memory is asked, and the record's
    namespace (Alpha's) is refused before anything is deleted."""
    bind(world.b.tenant, MEMORY_B)
    alpha_shared = f"/tenant/{world.a.tenant.pk}/shared"
    silo.add_response("get_memory_record", record(alpha_shared), {"memoryId": MEMORY_B, "memoryRecordId": RECORD})
    response = call(client, "DELETE", URL.format(slug="bravo") + f"{RECORD}/", bearer(world.b, world.b.owner))
    assert response.status_code == 404
    # Under Alpha's slug, Bravo's token is not Alpha's: 404 before any AWS call.
    response = call(client, "DELETE", URL.format(slug="alpha") + f"{RECORD}/", bearer(world.b, world.b.owner))
    assert response.status_code == 404
    assert audited(world.b, "memory.shared_deleted") == audited(world.a, "memory.shared_deleted") == []


# --- AWS failing: a problem that says why, never a 500 --------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "said"),
    [
        ("ThrottlingException", 503, "AWS answered ThrottlingException. Nothing was listed. Try again in a moment."),
        ("AccessDeniedException", 502, "AWS answered AccessDeniedException. Nothing was listed. Ask your provider"),
    ],
)
def test_an_error_answer_is_a_503_or_502_problem(client, world, silo, error, status, said):
    silo.add_client_error("list_memory_records", service_error_code=error, http_status_code=400)
    response = client.get(URL.format(slug="alpha"), **bearer(world.a, world.a.member))
    assert response.status_code == status
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and said in body["detail"]
    assert body["detail"].startswith("AgentCore Memory did not list the memories: ")
    assert ("Retry-After" in response) == (status == 503)


@pytest.mark.parametrize(
    ("make", "status"), [(client_without_credentials, 502), (client_without_network, 503)], ids=["creds", "network"]
)
def test_aws_unreachable_is_a_problem_for_every_operation(client, world, monkeypatch, make, status):
    entitle(world.a.tenant)
    memory_catalogue(world.a.tenant)
    bind(world.a.tenant, MEMORY_A)
    aws = make()
    monkeypatch.setattr(stores, "make_client", lambda region: aws)
    headers = bearer(world.a, world.a.admin)
    member = world.a.memberships["member"].pk
    answers = [
        client.get(URL.format(slug="alpha"), **headers),
        call(client, "POST", URL.format(slug="alpha"), headers, {"content": FACT, "scope": "shared"}),
        call(client, "DELETE", URL.format(slug="alpha") + f"{RECORD}/", headers),
        client.get(MEMBERS.format(slug="alpha") + f"{member}/", **headers),
        call(client, "POST", MEMBERS.format(slug="alpha") + f"{member}/clear/", headers),
    ]
    assert [a.status_code for a in answers] == [status] * 5
    assert all(a.json()["detail"].startswith("AgentCore Memory did not") for a in answers)
    assert audited(world.a, "memory.cleared") == audited(world.a, "memory.shared_added") == []


# --- members: counts on request, clearing ---------------------------------------------------------


def test_the_member_list_leaves_agentcore_counts_to_be_asked_one_at_a_time(client, world, silo):
    response = client.get(MEMBERS.format(slug="alpha"), **bearer(world.a, world.a.admin))
    assert response.status_code == 200
    assert {row["count"] for row in response.json()["results"]} == {None}  # no AWS call was made


def test_a_members_count_follows_next_token(client, world, silo):
    t, u = world.a.tenant.pk, world.a.member.pk
    mine = f"/tenant/{t}/user/{u}/agent/helpdesk"
    silo.add_response(
        "list_memory_records",
        {"memoryRecordSummaries": [summary(rid(1), "a", mine), summary(rid(2), "b", mine)], "nextToken": "page-2"},
        {"memoryId": MEMORY_A, "namespacePath": f"/tenant/{t}/user/{u}", "maxResults": 100},
    )
    silo.add_response(
        "list_memory_records",
        # a record also in the shared namespace is not the member's alone: not counted
        listing(
            summary(rid(3), "c", mine), {**summary(rid(4), "d", mine), "namespaces": [mine, f"/tenant/{t}/shared"]}
        ),
        {"memoryId": MEMORY_A, "namespacePath": f"/tenant/{t}/user/{u}", "maxResults": 100, "nextToken": "page-2"},
    )
    url = MEMBERS.format(slug="alpha") + f"{world.a.memberships['member'].pk}/"
    response = client.get(url, **bearer(world.a, world.a.admin))
    assert response.status_code == 200
    assert response.json() == {
        "membership_id": world.a.memberships["member"].pk,
        "email": "member@alpha.test",
        "role": "member",
        "count": 3,
        "more": False,
    }


def test_a_count_stops_at_the_cap_and_says_there_are_more(client, world, silo, monkeypatch):
    monkeypatch.setattr(stores, "MEMBER_CAP", 2)
    mine = f"/tenant/{world.a.tenant.pk}/user/{world.a.member.pk}"
    silo.add_response(
        "list_memory_records",
        {"memoryRecordSummaries": [summary(rid(n), "x", mine) for n in (1, 2)], "nextToken": "page-2"},
    )
    url = MEMBERS.format(slug="alpha") + f"{world.a.memberships['member'].pk}/"
    body = client.get(url, **bearer(world.a, world.a.admin)).json()
    assert body["count"] == 2 and body["more"] is True


def test_an_admin_clears_a_members_records_in_batches_and_it_is_audited(client, world, silo):
    t, u = world.a.tenant.pk, world.a.member.pk
    mine, all_agents = f"/tenant/{t}/user/{u}/agent/helpdesk", f"/tenant/{t}/user/{u}"
    silo.add_response("list_memory_records", listing(summary(rid(1), "a", mine), summary(rid(2), "b", all_agents)))
    silo.add_response(
        "batch_delete_memory_records",
        {
            "successfulRecords": [
                {"memoryRecordId": rid(1), "status": "SUCCEEDED"},
                {"memoryRecordId": rid(2), "status": "SUCCEEDED"},
            ],
            "failedRecords": [],
        },
        {
            "memoryId": MEMORY_A,
            "records": [
                {"memoryRecordId": rid(1), "namespace": mine},
                {"memoryRecordId": rid(2), "namespace": all_agents},
            ],
        },
    )
    member = world.a.memberships["member"]
    response = call(
        client, "POST", MEMBERS.format(slug="alpha") + f"{member.pk}/clear/", bearer(world.a, world.a.admin)
    )
    assert response.status_code == 200
    assert response.json() == {
        "deleted": 2,
        "failed": 0,
        "more": False,
        "detail": "2 memories of member@alpha.test cleared.",
    }
    [entry] = audited(world.a, "memory.cleared")
    assert entry.actor == world.a.admin and entry.after == {"deleted": 2, "store": "agentcore"}


def test_records_agentcore_did_not_delete_and_more_beyond_the_cap_are_said(client, world, silo, monkeypatch):
    monkeypatch.setattr(stores, "MEMBER_CAP", 2)
    mine = f"/tenant/{world.a.tenant.pk}/user/{world.a.member.pk}"
    silo.add_response(
        "list_memory_records",
        {"memoryRecordSummaries": [summary(rid(n), "x", mine) for n in (1, 2)], "nextToken": "page-2"},
    )
    silo.add_response(
        "batch_delete_memory_records",
        {
            "successfulRecords": [{"memoryRecordId": rid(1), "status": "SUCCEEDED"}],
            "failedRecords": [
                {"memoryRecordId": rid(2), "status": "FAILED", "errorCode": 500, "errorMessage": "Internal error"}
            ],
        },
    )
    member = world.a.memberships["member"]
    body = call(client, "POST", MEMBERS.format(slug="alpha") + f"{member.pk}/clear/", bearer(world.a, world.a.admin))
    assert body.json() == {
        "deleted": 1,
        "failed": 1,
        "more": True,
        "detail": (
            "1 memory of member@alpha.test cleared. 1 could not be deleted (AWS answered: Internal error); clear "
            "again to retry. More remain: at most 2 are cleared at a time in AgentCore Memory; clear again to "
            "delete the rest."
        ),
    }
    [entry] = audited(world.a, "memory.cleared")
    assert entry.after == {"deleted": 1, "store": "agentcore", "failed": 1, "more": True}


def test_the_list_follows_next_token_for_each_kind(client, world, silo):
    t, u = world.a.tenant.pk, world.a.member.pk
    mine, shared = f"/tenant/{t}/user/{u}", f"/tenant/{t}/shared"
    silo.add_response(
        "list_memory_records",
        {"memoryRecordSummaries": [summary(rid(1), "The first page.", mine)], "nextToken": "page-2"},
        {"memoryId": MEMORY_A, "namespacePath": mine, "maxResults": 100},
    )
    silo.add_response(
        "list_memory_records",
        listing(summary(rid(2), "The second page.", mine)),
        {"memoryId": MEMORY_A, "namespacePath": mine, "maxResults": 100, "nextToken": "page-2"},
    )
    silo.add_response(
        "list_memory_records",
        listing(summary(RECORD, FACT, shared)),
        {"memoryId": MEMORY_A, "namespace": shared, "maxResults": 100},
    )
    body = client.get(URL.format(slug="alpha"), **bearer(world.a, world.a.member)).json()
    assert {row["id"] for row in body["results"]} == {rid(1), rid(2), RECORD}
    assert body["truncated"] is False


def test_a_list_past_the_cap_says_it_is_not_whole(client, world, silo, monkeypatch):
    monkeypatch.setattr(stores, "LIST_CAP", 2)
    t, u = world.a.tenant.pk, world.a.member.pk
    silo.add_response(
        "list_memory_records",
        {"memoryRecordSummaries": [summary(rid(n), "x", f"/tenant/{t}/user/{u}") for n in (1, 2)], "nextToken": "p2"},
    )
    silo.add_response("list_memory_records", listing())  # the shared ones
    body = client.get(URL.format(slug="alpha"), **bearer(world.a, world.a.member)).json()
    assert len(body["results"]) == 2
    assert body["truncated"] is True


def test_the_service_lists_the_first_of_each_kind_and_says_there_are_more(world, silo, monkeypatch):
    monkeypatch.setattr(stores, "LIST_CAP", 2)
    t, u = world.a.tenant.pk, world.a.member.pk
    silo.add_response(
        "list_memory_records",
        {"memoryRecordSummaries": [summary(rid(n), "x", f"/tenant/{t}/user/{u}") for n in (1, 2)], "nextToken": "p2"},
    )
    silo.add_response("list_memory_records", listing())  # the shared ones
    with tenant_context(world.a.tenant):
        listed = services.memories_of(actor_for(world.a, "member"))
    assert [item.id for item in listed.items] == [rid(1), rid(2)]
    assert listed.truncated is True


def test_the_service_lists_the_local_table_whole(world):
    entitle(world.a.tenant, world.b.tenant)
    with tenant_context(world.a.tenant):
        listed = services.memories_of(actor_for(world.a, "member"))
    assert len(listed.items) == 0
    assert listed.truncated is False


def test_the_local_store_lists_everything_so_is_never_truncated(client, world):
    entitle(world.a.tenant, world.b.tenant)
    body = client.get(URL.format(slug="alpha"), **bearer(world.a, world.a.member)).json()
    assert body["truncated"] is False

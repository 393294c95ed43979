"""The Memory page's "Memory per member" for a tenant on AgentCore Memory.

Counting a member's records there is a walk of ListMemoryRecords over their namespaces, one
walk per member, so the page does not count every member on every visit: each row offers
"Count", which counts that member only (following nextToken, up to stores.MEMBER_CAP), and
"Clear", which deletes the member's records with BatchDeleteMemoryRecords and says what it
did. Never the contents; AWS failing is a message, never a 500.
"""

from __future__ import annotations

import pytest
from botocore.stub import Stubber

from agents.memory import stores
from tests.memory.helpers import entitle, memory_catalogue
from tests.memory.test_agentcore_manage import MEMORY_A, audited, bind, fake_client, listing, summary


def rid(n: int) -> str:
    return f"mem-{n:040d}"


@pytest.fixture(autouse=True)
def _aws_bindings_apply(settings):
    settings.AGENT_RUNTIME = "agentcore"


@pytest.fixture
def silo(world, monkeypatch):
    entitle(world.a.tenant)
    memory_catalogue(world.a.tenant)
    bind(world.a.tenant, MEMORY_A)
    client = fake_client()
    monkeypatch.setattr(stores, "make_client", lambda region: client)
    with Stubber(client) as stub:
        yield stub
        stub.assert_no_pending_responses()


def page_lists_nothing(silo):
    silo.add_response("list_memory_records", listing())  # the admin's own records
    silo.add_response("list_memory_records", listing())  # the shared ones


def test_an_admin_sees_every_member_with_count_and_clear_but_no_count_is_fetched(client, world, silo):
    page_lists_nothing(silo)
    client.force_login(world.a.admin)
    page = client.get("/t/alpha/memory/").content.decode()
    member = world.a.memberships["member"].pk
    assert 'id="member-memory-table"' in page and "member@alpha.test" in page
    assert f'href="/t/alpha/memory/?count={member}#member-memory"' in page
    assert f'action="/t/alpha/memory/members/{member}/clear/"' in page


def test_count_counts_that_member_only_following_next_token(client, world, silo):
    t, u = world.a.tenant.pk, world.a.member.pk
    page_lists_nothing(silo)
    silo.add_response(
        "list_memory_records",
        {"memoryRecordSummaries": [summary(rid(1), "a", f"/tenant/{t}/user/{u}")], "nextToken": "next"},
        {"memoryId": MEMORY_A, "namespacePath": f"/tenant/{t}/user/{u}", "maxResults": 100},
    )
    silo.add_response(
        "list_memory_records",
        listing(summary(rid(2), "b", f"/tenant/{t}/user/{u}/agent/helpdesk")),
        {"memoryId": MEMORY_A, "namespacePath": f"/tenant/{t}/user/{u}", "maxResults": 100, "nextToken": "next"},
    )
    client.force_login(world.a.admin)
    page = client.get(f"/t/alpha/memory/?count={world.a.memberships['member'].pk}").content.decode()
    assert f'id="member-{world.a.memberships["member"].pk}-count">2<' in page
    assert " a<" not in page  # counts, never contents


def test_a_count_beyond_the_cap_says_so(client, world, silo, monkeypatch):
    monkeypatch.setattr(stores, "MEMBER_CAP", 1)
    t, u = world.a.tenant.pk, world.a.member.pk
    page_lists_nothing(silo)
    silo.add_response(
        "list_memory_records",
        {"memoryRecordSummaries": [summary(rid(1), "a", f"/tenant/{t}/user/{u}")], "nextToken": "next"},
    )
    client.force_login(world.a.admin)
    page = client.get(f"/t/alpha/memory/?count={world.a.memberships['member'].pk}").content.decode()
    assert f'id="member-{world.a.memberships["member"].pk}-count">more than 1<' in page


def test_a_count_agentcore_cannot_give_is_a_message(client, world, silo):
    page_lists_nothing(silo)
    silo.add_client_error("list_memory_records", service_error_code="ThrottlingException", http_status_code=429)
    client.force_login(world.a.admin)
    response = client.get(f"/t/alpha/memory/?count={world.a.memberships['member'].pk}")
    assert response.status_code == 200
    assert "AgentCore Memory did not list the memories: AWS answered ThrottlingException." in response.content.decode()


def test_a_count_for_another_tenants_member_or_garbage_is_ignored(client, world, silo):
    for _ in range(2):
        page_lists_nothing(silo)
    client.force_login(world.a.admin)
    for value in (world.b.memberships["member"].pk, "x"):
        assert client.get(f"/t/alpha/memory/?count={value}").status_code == 200


def test_clear_deletes_the_members_records_in_agentcore_and_says_how_many(client, world, silo):
    t, u = world.a.tenant.pk, world.a.member.pk
    silo.add_response("list_memory_records", listing(summary(rid(1), "a", f"/tenant/{t}/user/{u}")))
    silo.add_response(
        "batch_delete_memory_records",
        {"successfulRecords": [{"memoryRecordId": rid(1), "status": "SUCCEEDED"}], "failedRecords": []},
        {"memoryId": MEMORY_A, "records": [{"memoryRecordId": rid(1), "namespace": f"/tenant/{t}/user/{u}"}]},
    )
    page_lists_nothing(silo)
    client.force_login(world.a.admin)
    response = client.post(f"/t/alpha/memory/members/{world.a.memberships['member'].pk}/clear/", follow=True)
    assert response.status_code == 200
    assert "1 memory of member@alpha.test cleared." in response.content.decode()
    [entry] = audited(world.a, "memory.cleared")
    assert entry.after == {"deleted": 1, "store": "agentcore"}


def test_a_clear_agentcore_cannot_do_is_a_message_not_a_500(client, world, silo):
    silo.add_client_error("list_memory_records", service_error_code="AccessDeniedException", http_status_code=403)
    page_lists_nothing(silo)
    client.force_login(world.a.admin)
    response = client.post(f"/t/alpha/memory/members/{world.a.memberships['member'].pk}/clear/", follow=True)
    assert response.status_code == 200
    page = response.content.decode()
    assert "AgentCore Memory did not clear the memories: AWS answered AccessDeniedException. Nothing was" in page
    assert audited(world.a, "memory.cleared") == []


def test_a_member_sees_no_member_table(client, world, silo):
    page_lists_nothing(silo)
    client.force_login(world.a.member)
    assert 'id="member-memory"' not in client.get("/t/alpha/memory/").content.decode()

"""Paging through a member's AgentCore memories over the REST API without walking AgentCore again.

Listing walks ListMemoryRecords (nextToken) for the member's namespaces and the shared one;
the API answers 50 at a time. The walked listing is kept briefly in Django's cache
(services.LISTING_TTL), so the next page is sliced from it, and:

* any write through the portal (a member's delete or add, an admin's shared delete or a
  member's memory cleared, the gateway's remember during a turn) drops the listings it
  makes stale, so a deleted memory is never on the next page;
* a listing answers only the member it was walked for, in their tenant;
* after the TTL, AgentCore is walked again.

botocore's Stubber holds exactly the answers each test expects: a walk nobody expected finds
no answer queued and the request fails (a 503), and an expected walk that never came is a
pending answer at the end.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from botocore.stub import ANY, Stubber

from agents.memory import services, stores
from tests.memory.helpers import REMEMBER, entitle, memory_catalogue, post, token_for, turn
from tests.memory.test_agentcore_api import URL, bearer, call, rid
from tests.memory.test_agentcore_manage import MEMORY_A, MEMORY_B, bind, fake_client, listing, record, summary

MEMBERS = "/api/v1/tenants/{slug}/memory-members/"


@pytest.fixture(autouse=True)
def _aws_bindings_apply(settings):
    settings.AGENT_RUNTIME = "agentcore"  # AWS bindings apply (not the embedded local runtime)


@pytest.fixture
def catalogue(world):
    entitle(world.a.tenant, world.b.tenant)
    catalogue = memory_catalogue(world.a.tenant, world.b.tenant)
    bind(world.a.tenant, MEMORY_A)
    bind(world.b.tenant, MEMORY_B)
    return catalogue


@pytest.fixture
def aws(catalogue, monkeypatch):
    client = fake_client()
    monkeypatch.setattr(stores, "make_client", lambda region: client)
    with Stubber(client) as stub:
        yield stub
        stub.assert_no_pending_responses()


def newest_first(count: int, namespace: str) -> list[dict]:
    start = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    return [
        {**summary(rid(n), f"Fact {n}.", namespace), "createdAt": start - timedelta(minutes=n)}
        for n in range(1, count + 1)
    ]


def expect_walk(aws, side, user, mine: list[dict], shared: list[dict] = (), memory_id: str = MEMORY_A) -> None:
    """One walk of `user`'s listing: their namespaces, then the tenant's shared one."""
    t = side.tenant.pk
    aws.add_response(
        "list_memory_records",
        listing(*mine),
        {"memoryId": memory_id, "namespacePath": f"/tenant/{t}/user/{user.pk}", "maxResults": 100},
    )
    aws.add_response(
        "list_memory_records",
        listing(*shared),
        {"memoryId": memory_id, "namespace": f"/tenant/{t}/shared", "maxResults": 100},
    )


def expect_delete(aws, namespace: str, record_id: str) -> None:
    aws.add_response("get_memory_record", record(namespace, record_id=record_id))
    aws.add_response(
        "delete_memory_record",
        {"memoryRecordId": record_id},
        {"memoryId": MEMORY_A, "memoryRecordId": record_id, "namespace": namespace},
    )


def ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def test_it_answers_the_second_page_from_the_first_pages_walk(client, world, aws):
    mine = f"/tenant/{world.a.tenant.pk}/user/{world.a.member.pk}"
    expect_walk(aws, world.a, world.a.member, newest_first(60, mine))  # one walk, no more
    headers = bearer(world.a, world.a.member)

    first = client.get(URL.format(slug="alpha"), **headers)
    second = client.get(URL.format(slug="alpha") + "?limit=50&offset=50", **headers)

    assert ids(first) == [rid(n) for n in range(1, 51)]
    assert ids(second) == [rid(n) for n in range(51, 61)]
    assert first.json()["count"] == second.json()["count"] == 60
    assert second.json()["truncated"] is False


def test_it_keeps_truncated_with_the_listing(client, world, aws, monkeypatch):
    monkeypatch.setattr(stores, "LIST_CAP", 2)
    t, u = world.a.tenant.pk, world.a.member.pk
    aws.add_response(
        "list_memory_records",
        {"memoryRecordSummaries": newest_first(2, f"/tenant/{t}/user/{u}"), "nextToken": "p2"},
    )
    aws.add_response("list_memory_records", listing())
    headers = bearer(world.a, world.a.member)

    first = client.get(URL.format(slug="alpha") + "?limit=1", **headers).json()
    second = client.get(URL.format(slug="alpha") + "?limit=1&offset=1", **headers).json()

    assert first["truncated"] is second["truncated"] is True
    assert [row["id"] for row in second["results"]] == [rid(2)]


def test_a_deleted_memory_is_not_on_the_next_listing(client, world, aws):
    mine = f"/tenant/{world.a.tenant.pk}/user/{world.a.member.pk}"
    headers = bearer(world.a, world.a.member)
    expect_walk(aws, world.a, world.a.member, newest_first(2, mine))
    assert ids(client.get(URL.format(slug="alpha"), **headers)) == [rid(1), rid(2)]

    expect_delete(aws, mine, rid(1))
    assert call(client, "DELETE", URL.format(slug="alpha") + f"{rid(1)}/", headers).status_code == 204
    expect_walk(aws, world.a, world.a.member, newest_first(2, mine)[1:])  # AgentCore without it

    assert ids(client.get(URL.format(slug="alpha"), **headers)) == [rid(2)]


def test_an_admin_deleting_a_shared_memory_drops_every_members_listing(client, world, aws):
    shared = f"/tenant/{world.a.tenant.pk}/shared"
    member = bearer(world.a, world.a.member)
    expect_walk(aws, world.a, world.a.member, [], newest_first(2, shared))
    assert ids(client.get(URL.format(slug="alpha"), **member)) == [rid(1), rid(2)]

    expect_delete(aws, shared, rid(1))
    admin = bearer(world.a, world.a.admin)
    assert call(client, "DELETE", URL.format(slug="alpha") + f"{rid(1)}/", admin).status_code == 204
    expect_walk(aws, world.a, world.a.member, [], newest_first(2, shared)[1:])

    assert ids(client.get(URL.format(slug="alpha"), **member)) == [rid(2)]


def test_clearing_a_members_memory_drops_their_listing(client, world, aws):
    mine = f"/tenant/{world.a.tenant.pk}/user/{world.a.member.pk}"
    member = bearer(world.a, world.a.member)
    expect_walk(aws, world.a, world.a.member, newest_first(1, mine))
    assert ids(client.get(URL.format(slug="alpha"), **member)) == [rid(1)]

    aws.add_response("list_memory_records", listing(*newest_first(1, mine)))
    aws.add_response(
        "batch_delete_memory_records",
        {"successfulRecords": [{"memoryRecordId": rid(1), "status": "SUCCEEDED"}], "failedRecords": []},
    )
    membership = world.a.memberships["member"].pk
    cleared = call(
        client, "POST", MEMBERS.format(slug="alpha") + f"{membership}/clear/", bearer(world.a, world.a.admin)
    )
    assert cleared.status_code == 200
    expect_walk(aws, world.a, world.a.member, [])

    assert ids(client.get(URL.format(slug="alpha"), **member)) == []


def test_a_memory_the_member_adds_is_on_the_next_listing(client, world, aws):
    mine = f"/tenant/{world.a.tenant.pk}/user/{world.a.member.pk}"
    member = bearer(world.a, world.a.member)
    expect_walk(aws, world.a, world.a.member, [])
    assert ids(client.get(URL.format(slug="alpha"), **member)) == []

    aws.add_response(
        "batch_create_memory_records",
        {
            "successfulRecords": [{"memoryRecordId": rid(1), "status": "SUCCEEDED", "requestIdentifier": "r-1"}],
            "failedRecords": [],
        },
    )
    assert (
        call(client, "POST", URL.format(slug="alpha"), member, {"content": "Fact 1.", "scope": "user"}).status_code
        == 201
    )
    expect_walk(aws, world.a, world.a.member, newest_first(1, mine))

    assert ids(client.get(URL.format(slug="alpha"), **member)) == [rid(1)]


def test_what_an_agent_remembers_during_a_turn_is_on_the_next_listing(client, world, aws, catalogue):
    mine = f"/tenant/{world.a.tenant.pk}/user/{world.a.member.pk}/agent/helpdesk"
    member = bearer(world.a, world.a.member)
    expect_walk(aws, world.a, world.a.member, [])
    assert ids(client.get(URL.format(slug="alpha"), **member)) == []

    aws.add_response(
        "batch_create_memory_records",
        {
            "successfulRecords": [{"memoryRecordId": rid(1), "status": "SUCCEEDED", "requestIdentifier": "r-1"}],
            "failedRecords": [],
        },
        {
            "memoryId": MEMORY_A,
            "records": [{"requestIdentifier": ANY, "namespaces": [mine], "content": ANY, "timestamp": ANY}],
            "clientToken": ANY,
        },
    )
    token = token_for(world.a, turn(world.a, world.a.member, catalogue, status="running"))
    assert post(client, REMEMBER, token, content="Fact 1.", agent="helpdesk").status_code == 201
    expect_walk(aws, world.a, world.a.member, newest_first(1, mine))

    assert ids(client.get(URL.format(slug="alpha"), **member)) == [rid(1)]


def test_a_failed_deletion_still_drops_the_listing(client, world, aws):
    """AgentCore may have deleted the record before the answer was lost: the next listing asks it."""
    mine = f"/tenant/{world.a.tenant.pk}/user/{world.a.member.pk}"
    headers = bearer(world.a, world.a.member)
    expect_walk(aws, world.a, world.a.member, newest_first(1, mine))
    assert ids(client.get(URL.format(slug="alpha"), **headers)) == [rid(1)]

    aws.add_response("get_memory_record", record(mine, record_id=rid(1)))
    aws.add_client_error("delete_memory_record", service_error_code="ThrottlingException", http_status_code=400)
    assert call(client, "DELETE", URL.format(slug="alpha") + f"{rid(1)}/", headers).status_code == 503
    expect_walk(aws, world.a, world.a.member, [])

    assert ids(client.get(URL.format(slug="alpha"), **headers)) == []


def test_a_colleague_and_another_tenants_member_get_their_own_listings(client, world, aws):
    a, b = world.a.tenant.pk, world.b.tenant.pk
    expect_walk(aws, world.a, world.a.member, newest_first(1, f"/tenant/{a}/user/{world.a.member.pk}"))
    expect_walk(aws, world.a, world.a.admin, [summary(rid(7), "The admin's.", f"/tenant/{a}/user/{world.a.admin.pk}")])
    expect_walk(
        aws,
        world.b,
        world.b.member,
        [summary(rid(9), "Bravo's.", f"/tenant/{b}/user/{world.b.member.pk}")],
        memory_id=MEMORY_B,
    )

    member = ids(client.get(URL.format(slug="alpha"), **bearer(world.a, world.a.member)))
    colleague = ids(client.get(URL.format(slug="alpha"), **bearer(world.a, world.a.admin)))
    other_tenant = ids(client.get(URL.format(slug="bravo"), **bearer(world.b, world.b.member)))

    assert (member, colleague, other_tenant) == ([rid(1)], [rid(7)], [rid(9)])


def test_each_filter_has_its_own_listing(client, world, aws):
    mine = f"/tenant/{world.a.tenant.pk}/user/{world.a.member.pk}"
    headers = bearer(world.a, world.a.member)
    expect_walk(aws, world.a, world.a.member, newest_first(2, mine))
    expect_walk(aws, world.a, world.a.member, newest_first(2, mine))

    everything = ids(client.get(URL.format(slug="alpha"), **headers))
    found = ids(client.get(URL.format(slug="alpha") + "?q=fact 2", **headers))

    assert (everything, found) == ([rid(1), rid(2)], [rid(2)])


def test_after_the_ttl_agentcore_is_walked_again(client, world, aws, monkeypatch):
    monkeypatch.setattr(services, "LISTING_TTL", 1)
    mine = f"/tenant/{world.a.tenant.pk}/user/{world.a.member.pk}"
    headers = bearer(world.a, world.a.member)
    expect_walk(aws, world.a, world.a.member, newest_first(1, mine))
    assert ids(client.get(URL.format(slug="alpha"), **headers)) == [rid(1)]
    expect_walk(aws, world.a, world.a.member, newest_first(2, mine))  # a record written elsewhere meanwhile

    time.sleep(1.1)  # the cache (locmem or Redis) expires the listing by its own clock

    assert ids(client.get(URL.format(slug="alpha"), **headers)) == [rid(1), rid(2)]


def test_with_redis_down_it_walks_agentcore_for_every_page_and_a_delete_still_answers(
    client, world, aws, settings, monkeypatch
):
    from tests.portal.test_cache_redis_down import take_redis_down

    mine = f"/tenant/{world.a.tenant.pk}/user/{world.a.member.pk}"
    headers = bearer(world.a, world.a.member)
    take_redis_down(settings, monkeypatch)
    expect_walk(aws, world.a, world.a.member, newest_first(60, mine))
    expect_walk(aws, world.a, world.a.member, newest_first(60, mine))  # no listing kept: walked again

    assert ids(client.get(URL.format(slug="alpha"), **headers)) == [rid(n) for n in range(1, 51)]
    assert ids(client.get(URL.format(slug="alpha") + "?limit=50&offset=50", **headers)) == [
        rid(n) for n in range(51, 61)
    ]
    expect_delete(aws, mine, rid(1))
    assert call(client, "DELETE", URL.format(slug="alpha") + f"{rid(1)}/", headers).status_code == 204

"""Adding and deleting memories of a tenant bound to AgentCore Memory, from the Memory page.

A silo tenant with a bound `memory_id` keeps its memories in its own AgentCore Memory
(agents/memory/stores.py), so the page's actions go there, through the data-plane client
(checked by botocore's Stubber against the real service model, with the parameters pinned):

* an owner or admin adds a shared fact: BatchCreateMemoryRecords, one record in the
  tenant's shared namespace, in the tenant's own memory;
* an owner or admin deletes a shared record, a member deletes one of their own:
  GetMemoryRecord in the tenant's own memory first, and DeleteMemoryRecord only when the
  record's namespace is one the actor may write (policy.can_write), else "not found";
* every change is audited like the local store's, without the text;
* AWS failing (an error answer, no credentials, no connection) is a clear message on the
  page, never a 500, and the typed fact is still in the form.
"""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
import botocore.session
import pytest
from botocore.credentials import CredentialResolver
from botocore.exceptions import EndpointConnectionError
from botocore.stub import ANY, Stubber

from agents.memory import stores
from agents.memory.models import MemoryRecord
from tenants.context import tenant_context
from tenants.models import AuditLog
from tests.memory.helpers import entitle, memory_catalogue

MEMORY_A = "alpha_memory-a1B2c3D4e5"
MEMORY_B = "bravo_memory-f6G7h8I9j0"
RECORD = "mem-" + "a1b2c3d4e5" * 4  # 44 characters, the shape AgentCore gives
FACT = "Support hours are 9 to 17 CET."


def bind(tenant, memory_id):
    tenant.deployment_model = "silo"
    tenant.resource_bindings = {**(tenant.resource_bindings or {}), "memory_id": memory_id}
    tenant.save()


def fake_client():
    return boto3.client("bedrock-agentcore", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")


def record(namespace, text=FACT, record_id=RECORD):
    return {
        "memoryRecord": {
            "memoryRecordId": record_id,
            "content": {"text": text},
            "memoryStrategyId": "portal",
            "namespaces": [namespace],
            "createdAt": datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
        }
    }


def listing(*summaries):
    return {"memoryRecordSummaries": list(summaries)}


def summary(record_id, text, namespace):
    return {
        "memoryRecordId": record_id,
        "content": {"text": text},
        "memoryStrategyId": "portal",
        "namespaces": [namespace],
        "createdAt": datetime(2026, 12, 1, 9, 0, tzinfo=UTC),
    }


def audited(side, action):
    with tenant_context(side.tenant):
        return list(AuditLog.objects.filter(action=action))


def local_records(side):
    with tenant_context(side.tenant):
        return list(MemoryRecord.objects.all())


@pytest.fixture(autouse=True)
def _aws_bindings_apply(settings):
    settings.AGENT_RUNTIME = "agentcore"  # AWS bindings apply (not the embedded local runtime)


@pytest.fixture
def silo(world, monkeypatch):
    """Alpha bound to its AgentCore Memory; every client the store makes is this stubbed one."""
    entitle(world.a.tenant, world.b.tenant)
    memory_catalogue(world.a.tenant, world.b.tenant)
    bind(world.a.tenant, MEMORY_A)
    client = fake_client()
    monkeypatch.setattr(stores, "make_client", lambda region: client)
    with Stubber(client) as stub:
        yield stub
        stub.assert_no_pending_responses()


def test_the_page_offers_an_admin_to_add_and_delete_shared_records_and_their_own(client, world, silo):
    t, u = world.a.tenant.pk, world.a.admin.pk
    mine = "mem-" + "m" * 40
    silo.add_response(
        "list_memory_records",
        listing(summary(mine, "I prefer short answers.", f"/tenant/{t}/user/{u}")),
        {"memoryId": MEMORY_A, "namespacePath": f"/tenant/{t}/user/{u}", "maxResults": 100},
    )
    silo.add_response(
        "list_memory_records",
        listing(summary(RECORD, FACT, f"/tenant/{t}/shared")),
        {"memoryId": MEMORY_A, "namespace": f"/tenant/{t}/shared", "maxResults": 100},
    )
    client.force_login(world.a.admin)
    page = client.get("/t/alpha/memory/").content.decode()
    assert 'id="shared-memory-form"' in page
    assert f'action="/t/alpha/memory/shared/{RECORD}/delete/"' in page
    assert f'action="/t/alpha/memory/{mine}/delete/"' in page


def test_a_member_may_delete_their_own_records_but_not_shared_ones(client, world, silo):
    t, u = world.a.tenant.pk, world.a.member.pk
    mine = "mem-" + "m" * 40
    silo.add_response("list_memory_records", listing(summary(mine, "My name is Ada.", f"/tenant/{t}/user/{u}")))
    silo.add_response("list_memory_records", listing(summary(RECORD, FACT, f"/tenant/{t}/shared")))
    client.force_login(world.a.member)
    page = client.get("/t/alpha/memory/").content.decode()
    assert f'action="/t/alpha/memory/{mine}/delete/"' in page
    assert f"/t/alpha/memory/shared/{RECORD}/delete/" not in page
    assert 'id="shared-memory-form"' not in page


def test_an_admin_adds_a_shared_fact_as_a_record_in_the_tenants_shared_namespace(client, world, silo):
    t = world.a.tenant.pk
    silo.add_response(
        "batch_create_memory_records",
        {
            "successfulRecords": [{"memoryRecordId": RECORD, "status": "SUCCEEDED", "requestIdentifier": "portal-1"}],
            "failedRecords": [],
        },
        {
            "memoryId": MEMORY_A,
            "records": [
                {
                    "requestIdentifier": ANY,
                    "namespaces": [f"/tenant/{t}/shared"],
                    "content": {"text": FACT},
                    "timestamp": ANY,
                }
            ],
            "clientToken": ANY,
        },
    )
    client.force_login(world.a.admin)
    response = client.post("/t/alpha/memory/shared/", {"content": "  Support hours are   9 to 17 CET. "})
    assert response.status_code == 302
    [entry] = audited(world.a, "memory.shared_added")
    assert entry.actor == world.a.admin
    assert entry.target_repr == f"/tenant/{t}/shared #{RECORD}"
    assert "Support" not in f"{entry.target_repr} {entry.before} {entry.after}"
    assert local_records(world.a) == []  # kept in AgentCore, not in the portal's table


def test_a_record_agentcore_did_not_create_is_a_form_error(client, world, silo):
    silo.add_response(
        "batch_create_memory_records",
        {
            "successfulRecords": [],
            "failedRecords": [
                {"memoryRecordId": RECORD, "status": "FAILED", "errorCode": 400, "errorMessage": "Bad namespace"}
            ],
        },
    )
    silo.add_response("list_memory_records", listing())  # the page shown again with the error
    silo.add_response("list_memory_records", listing())
    client.force_login(world.a.admin)
    response = client.post("/t/alpha/memory/shared/", {"content": FACT})
    assert response.status_code == 400
    assert "AgentCore Memory did not keep the fact: AWS answered: Bad namespace." in response.content.decode()
    assert audited(world.a, "memory.shared_added") == []


def test_an_owner_deletes_a_shared_record_after_checking_its_namespace(client, world, silo):
    t = world.a.tenant.pk
    shared = f"/tenant/{t}/shared"
    silo.add_response("get_memory_record", record(shared), {"memoryId": MEMORY_A, "memoryRecordId": RECORD})
    silo.add_response(
        "delete_memory_record",
        {"memoryRecordId": RECORD},
        {"memoryId": MEMORY_A, "memoryRecordId": RECORD, "namespace": shared},
    )
    client.force_login(world.a.owner)
    response = client.post(f"/t/alpha/memory/shared/{RECORD}/delete/")
    assert response.status_code == 302
    [entry] = audited(world.a, "memory.shared_deleted")
    assert entry.actor == world.a.owner and entry.target_repr == f"{shared} #{RECORD}"


def test_a_member_deletes_their_own_record(client, world, silo):
    namespace = f"/tenant/{world.a.tenant.pk}/user/{world.a.member.pk}/agent/helpdesk"
    silo.add_response("get_memory_record", record(namespace), {"memoryId": MEMORY_A, "memoryRecordId": RECORD})
    silo.add_response(
        "delete_memory_record",
        {"memoryRecordId": RECORD},
        {"memoryId": MEMORY_A, "memoryRecordId": RECORD, "namespace": namespace},
    )
    client.force_login(world.a.member)
    assert client.post(f"/t/alpha/memory/{RECORD}/delete/").status_code == 302
    [entry] = audited(world.a, "memory.deleted")
    assert entry.actor == world.a.member and entry.target_repr == f"{namespace} #{RECORD}"


@pytest.mark.parametrize(
    ("who", "url", "namespace"),
    [
        # a colleague's record, even for an admin: a member's memories are theirs
        ("admin", "/t/alpha/memory/{record}/delete/", "/tenant/{t}/user/{owner}"),
        # a shared record through a member's own delete
        ("admin", "/t/alpha/memory/{record}/delete/", "/tenant/{t}/shared"),
        # one's own record through the shared delete
        ("admin", "/t/alpha/memory/shared/{record}/delete/", "/tenant/{t}/user/{admin}"),
        # a record another tenant's namespace names (a misconfigured strategy put it here)
        ("owner", "/t/alpha/memory/shared/{record}/delete/", "/tenant/{other}/shared"),
        # a record in no portal namespace
        ("owner", "/t/alpha/memory/shared/{record}/delete/", "/imported/shared"),
    ],
)
def test_a_record_the_actor_may_not_write_is_not_found_and_never_deleted(client, world, silo, who, url, namespace):
    names = {
        "t": world.a.tenant.pk,
        "owner": world.a.owner.pk,
        "admin": world.a.admin.pk,
        "other": world.b.tenant.pk,
        "record": RECORD,
    }
    silo.add_response(
        "get_memory_record", record(namespace.format(**names)), {"memoryId": MEMORY_A, "memoryRecordId": RECORD}
    )
    # No delete_memory_record is stubbed: calling it would fail the test.
    client.force_login(world.a.user(who))
    assert client.post(url.format(**names)).status_code == 404
    assert audited(world.a, "memory.deleted") == audited(world.a, "memory.shared_deleted") == []


def test_a_member_may_not_delete_shared_records(client, world, silo):
    client.force_login(world.a.member)
    assert client.post(f"/t/alpha/memory/shared/{RECORD}/delete/").status_code == 403


def test_a_record_gone_from_agentcore_is_not_found(client, world, silo):
    silo.add_client_error("get_memory_record", service_error_code="ResourceNotFoundException", http_status_code=404)
    client.force_login(world.a.owner)
    assert client.post(f"/t/alpha/memory/shared/{RECORD}/delete/").status_code == 404


def test_another_tenants_admin_cannot_delete_a_record_by_its_id(client, world, silo, monkeypatch):
    """Bravo's admin names Alpha's record: Bravo's own memory is the only one asked, and the
    record's namespace (Alpha's) is refused before anything is deleted."""
    bind(world.b.tenant, MEMORY_B)
    alpha_shared = f"/tenant/{world.a.tenant.pk}/shared"
    silo.add_response("get_memory_record", record(alpha_shared), {"memoryId": MEMORY_B, "memoryRecordId": RECORD})
    client.force_login(world.b.admin)
    assert client.post(f"/t/bravo/memory/shared/{RECORD}/delete/").status_code == 404
    assert audited(world.b, "memory.shared_deleted") == []


def test_a_tenant_on_the_portals_store_never_calls_agentcore_for_a_record_id(client, world, silo):
    """Bravo keeps its memories in the portal: an AgentCore record id is refused before any AWS call."""
    client.force_login(world.b.admin)
    assert client.post(f"/t/bravo/memory/shared/{RECORD}/delete/").status_code == 404
    assert client.post(f"/t/bravo/memory/{RECORD}/delete/").status_code == 404


def test_a_malformed_record_id_is_not_found_without_calling_agentcore(client, world, silo):
    client.force_login(world.a.owner)
    assert client.post("/t/alpha/memory/shared/mem-short/delete/").status_code == 404
    assert client.post("/t/alpha/memory/shared/12/delete/").status_code == 404


# --- AWS failing ----------------------------------------------------------------------------------


def client_without_credentials():
    """A real client that finds no AWS credentials: every call raises NoCredentialsError."""
    session = botocore.session.Session()
    session.register_component("credential_provider", CredentialResolver(providers=[]))
    return session.create_client("bedrock-agentcore", region_name="eu-west-1")


def client_without_network():
    """A real client whose requests never reach AWS: every call raises EndpointConnectionError."""
    client = fake_client()

    def refuse(request, **kwargs):
        raise EndpointConnectionError(endpoint_url=request.url)

    client.meta.events.register("before-send.bedrock-agentcore", refuse)
    return client


FAILING = {"no credentials": client_without_credentials, "no connection": client_without_network}
# What the person is told: why, and whether waiting helps (a missing credential does not).
SAID = {
    "no credentials": "the portal has no AWS credentials for it. Nothing was {done}. Ask your provider&#x27;s operator",
    "no connection": "its endpoint could not be reached. Nothing was {done}. Try again in a moment.",
}


@pytest.fixture(params=sorted(FAILING))
def failing(request, world, monkeypatch):
    entitle(world.a.tenant)
    memory_catalogue(world.a.tenant)
    bind(world.a.tenant, MEMORY_A)
    client = FAILING[request.param]()
    monkeypatch.setattr(stores, "make_client", lambda region: client)
    return request.param


def test_an_add_agentcore_cannot_take_is_a_form_error_that_keeps_the_text(client, world, failing):
    client.force_login(world.a.admin)
    response = client.post("/t/alpha/memory/shared/", {"content": "The office is closed on Fridays."})
    assert response.status_code == 400
    page = response.content.decode()
    assert "AgentCore Memory did not keep the fact: " + SAID[failing].format(done="saved") in page
    assert 'value="The office is closed on Fridays."' in page
    assert audited(world.a, "memory.shared_added") == []


def test_a_delete_agentcore_cannot_take_is_a_message_not_a_500(client, world, failing):
    client.force_login(world.a.owner)
    response = client.post(f"/t/alpha/memory/shared/{RECORD}/delete/", follow=True)
    assert response.status_code == 200
    page = response.content.decode()
    assert "AgentCore Memory did not delete the memory: " + SAID[failing].format(done="deleted") in page
    assert 'id="memory-store-unavailable"' in page
    assert audited(world.a, "memory.shared_deleted") == []


def test_an_error_answer_from_agentcore_is_a_form_error(client, world, silo):
    silo.add_client_error(
        "batch_create_memory_records", service_error_code="AccessDeniedException", http_status_code=403
    )
    silo.add_client_error("list_memory_records", service_error_code="AccessDeniedException", http_status_code=403)
    client.force_login(world.a.admin)
    response = client.post("/t/alpha/memory/shared/", {"content": FACT})
    assert response.status_code == 400
    page = response.content.decode()
    assert "AgentCore Memory did not keep the fact" in page and "AccessDeniedException" in page


def test_the_page_says_when_agentcore_holds_more_than_it_lists(client, world, silo, monkeypatch):
    monkeypatch.setattr(stores, "LIST_CAP", 2)
    t, u = world.a.tenant.pk, world.a.member.pk
    silo.add_response(
        "list_memory_records",
        {
            "memoryRecordSummaries": [summary(f"mem-{n:040d}", f"Fact {n}.", f"/tenant/{t}/user/{u}") for n in (1, 2)],
            "nextToken": "page-2",
        },
    )
    silo.add_response("list_memory_records", listing(summary(RECORD, FACT, f"/tenant/{t}/shared")))
    client.force_login(world.a.member)
    page = client.get("/t/alpha/memory/").content.decode()
    assert 'id="memory-list-truncated"' in page
    assert "the first 2 of each kind" in page
    assert "Fact 1." in page and "Fact 2." in page


def test_the_page_says_nothing_of_a_cap_when_everything_is_listed(client, world, silo):
    silo.add_response("list_memory_records", listing())
    silo.add_response("list_memory_records", listing())
    client.force_login(world.a.member)
    assert 'id="memory-list-truncated"' not in client.get("/t/alpha/memory/").content.decode()

"""The two memory stores: the local table and a silo tenant's AgentCore Memory (botocore Stubber)."""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import ANY, Stubber

from agents.memory import stores
from agents.memory.policy import Namespace
from tenants.context import tenant_context
from tests.memory.helpers import entitle, memory_catalogue

MEMORY_ID = "alpha_memory-a1B2c3D4e5"
SESSION = "conv-0123456789abcdef0123456789abcdef-01234567"


def writer(user_id, agent_id=None):
    return stores.Writer(user_id=user_id, agent_id=agent_id, session_id=SESSION)


def test_the_local_store_ranks_by_shared_words_and_keeps_to_the_namespaces(world):
    catalogue = memory_catalogue(world.a.tenant)
    mine = Namespace(world.a.tenant.pk, world.a.member.pk, "helpdesk")
    theirs = Namespace(world.a.tenant.pk, world.a.owner.pk, "helpdesk")
    store = stores.LocalStore()
    with tenant_context(world.a.tenant):
        store.remember(mine, "My dog is called Rex.", writer(world.a.member.pk, catalogue.helpdesk.pk))
        store.remember(mine, "My dog Rex likes long walks in parks.", writer(world.a.member.pk, catalogue.helpdesk.pk))
        store.remember(theirs, "My dog is called Bella.", writer(world.a.owner.pk, catalogue.helpdesk.pk))

        found = store.recall([mine], "What do I know about my dog's walks?", 5)
        nothing = store.recall([mine], "invoices", 5)
        top = store.recall([mine], "dog", 1)

    assert [m.content for m in found] == ["My dog Rex likes long walks in parks.", "My dog is called Rex."]
    assert all(m.namespace == mine.path for m in found)
    assert nothing == []
    assert [m.content for m in top] == ["My dog Rex likes long walks in parks."]  # newest among equals


def test_the_store_is_agentcore_for_a_silo_tenant_with_a_memory_id_and_local_otherwise(world, monkeypatch, settings):
    settings.AGENT_RUNTIME = "agentcore"  # AWS bindings apply (not the embedded local runtime)
    monkeypatch.setattr(stores, "make_client", lambda region: "client")
    tenant = world.a.tenant
    assert isinstance(stores.store_for(tenant), stores.LocalStore)
    tenant.resource_bindings = {"memory_id": MEMORY_ID}
    assert isinstance(stores.store_for(tenant), stores.LocalStore)  # pooled: never a tenant's own memory
    tenant.deployment_model = "silo"
    store = stores.store_for(tenant)
    assert isinstance(store, stores.AgentCoreStore) and store.memory_id == MEMORY_ID
    settings.AGENT_RUNTIME = "local"  # embedded defaults: the binding stays, the portal's table is used
    assert isinstance(stores.store_for(tenant), stores.LocalStore)


@pytest.fixture
def agentcore():
    client = boto3.client(
        "bedrock-agentcore", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stub:
        yield stores.AgentCoreStore(MEMORY_ID, client), stub
        stub.assert_no_pending_responses()


def test_agentcore_remember_creates_one_record_in_the_namespace(agentcore):
    """A fact goes straight into the portal's namespace (BatchCreateMemoryRecords), not through
    an event whose extraction strategy would choose the namespace itself."""
    store, stub = agentcore
    namespace = Namespace(7, 42, "helpdesk")
    record_id = "mem-" + "0123456789" * 4
    stub.add_response(
        "batch_create_memory_records",
        {
            "successfulRecords": [{"memoryRecordId": record_id, "status": "SUCCEEDED", "requestIdentifier": "r-1"}],
            "failedRecords": [],
        },
        {
            "memoryId": MEMORY_ID,
            "records": [
                {
                    "requestIdentifier": ANY,
                    "namespaces": ["/tenant/7/user/42/agent/helpdesk"],
                    "content": {"text": "My name is Ada."},
                    "timestamp": ANY,
                }
            ],
            "clientToken": ANY,
        },
    )

    memory = store.remember(namespace, "My name is Ada.", writer(42))

    assert memory.id == f"agentcore-{record_id}" and memory.namespace == namespace.path


def summary(record_id, text, namespaces, score):
    return {
        "memoryRecordId": f"mem-{record_id:03d}-" + "0123456789" * 4,
        "content": {"text": text},
        "memoryStrategyId": "facts-0123456789",
        "namespaces": namespaces,
        "createdAt": datetime(2026, 12, 1, tzinfo=UTC),
        "score": score,
    }


def test_agentcore_recall_searches_each_readable_namespace_and_drops_foreign_records(agentcore):
    store, stub = agentcore
    mine, shared = Namespace(7, 42, "helpdesk"), Namespace(7)
    stub.add_response(
        "retrieve_memory_records",
        {
            "memoryRecordSummaries": [
                summary(1, "My name is Ada.", [mine.path], 0.5),
                # a record of another member that a misconfigured strategy returned: never answered
                summary(2, "My name is Bob.", ["/tenant/7/user/43/agent/helpdesk"], 0.9),
            ]
        },
        {
            "memoryId": MEMORY_ID,
            "namespace": mine.path,
            "searchCriteria": {"searchQuery": "what is my name", "topK": 3},
            "maxResults": 3,
        },
    )
    stub.add_response(
        "retrieve_memory_records",
        {"memoryRecordSummaries": [summary(3, "The office is in Lisbon.", [shared.path], 0.7)]},
        {
            "memoryId": MEMORY_ID,
            "namespace": shared.path,
            "searchCriteria": {"searchQuery": "what is my name", "topK": 3},
            "maxResults": 3,
        },
    )

    found = store.recall([mine, shared], "what is my name", 3)

    assert [(m.content, m.namespace) for m in found] == [
        ("The office is in Lisbon.", shared.path),
        ("My name is Ada.", mine.path),
    ]


def test_agentcore_failures_are_store_unavailable(agentcore):
    store, stub = agentcore
    stub.add_client_error("retrieve_memory_records", service_error_code="ThrottledException", http_status_code=429)
    stub.add_client_error(
        "batch_create_memory_records", service_error_code="AccessDeniedException", http_status_code=403
    )

    with pytest.raises(stores.StoreUnavailable):
        store.recall([Namespace(7, 42)], "name", 3)
    with pytest.raises(stores.StoreUnavailable):
        store.remember(Namespace(7, 42), "My name is Ada.", writer(42))


def test_a_silo_tenants_gateway_calls_go_to_its_agentcore_memory(client, world, monkeypatch, settings):
    """The gateway end to end for a silo tenant: recall reaches AgentCore with the member's namespaces."""
    from tests.memory.helpers import RECALL, post, token_for, turn

    settings.AGENT_RUNTIME = "agentcore"  # AWS bindings apply (not the embedded local runtime)
    entitle(world.a.tenant)
    catalogue = memory_catalogue(world.a.tenant)
    world.a.tenant.deployment_model = "silo"
    world.a.tenant.resource_bindings = {"memory_id": MEMORY_ID}
    world.a.tenant.save(update_fields=["deployment_model", "resource_bindings"])
    boto = boto3.client("bedrock-agentcore", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    monkeypatch.setattr(stores, "make_client", lambda region: boto)
    t, u = world.a.tenant.pk, world.a.member.pk
    with Stubber(boto) as stub:
        for path in (f"/tenant/{t}/user/{u}/agent/helpdesk", f"/tenant/{t}/user/{u}", f"/tenant/{t}/shared"):
            records = [summary(1, "My name is Ada.", [path], 0.5)] if path.endswith("helpdesk") else []
            stub.add_response(
                "retrieve_memory_records",
                {"memoryRecordSummaries": records},
                {"memoryId": MEMORY_ID, "namespace": path, "searchCriteria": ANY, "maxResults": 5},
            )
        response = post(client, RECALL, token_for(world.a, turn(world.a, world.a.member, catalogue)), query="name")
        stub.assert_no_pending_responses()
    assert [m["content"] for m in response.json()["memories"]] == ["My name is Ada."]
    with tenant_context(world.a.tenant):
        from agents.memory.models import MemoryRecord

        assert not MemoryRecord.objects.exists()


def _silo_gateway(world, monkeypatch, settings, boto):
    settings.AGENT_RUNTIME = "agentcore"  # AWS bindings apply (not the embedded local runtime)
    entitle(world.a.tenant)
    catalogue = memory_catalogue(world.a.tenant)
    world.a.tenant.deployment_model = "silo"
    world.a.tenant.resource_bindings = {"memory_id": MEMORY_ID}
    world.a.tenant.save(update_fields=["deployment_model", "resource_bindings"])
    monkeypatch.setattr(stores, "make_client", lambda region: boto)
    return catalogue


def test_an_owners_shared_fact_through_the_gateway_is_a_record_in_the_shared_namespace(
    client, world, monkeypatch, settings
):
    """remember(scope=shared) for a silo tenant: one record in /tenant/<t>/shared of its own memory,
    not an event that an extraction strategy would file under the owner's own namespace."""
    from tests.memory.helpers import REMEMBER, post, token_for, turn

    boto = boto3.client("bedrock-agentcore", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
    catalogue = _silo_gateway(world, monkeypatch, settings, boto)
    record_id = "mem-" + "s" * 40
    shared = f"/tenant/{world.a.tenant.pk}/shared"
    with Stubber(boto) as stub:
        stub.add_response(
            "batch_create_memory_records",
            {
                "successfulRecords": [{"memoryRecordId": record_id, "status": "SUCCEEDED", "requestIdentifier": "r-1"}],
                "failedRecords": [],
            },
            {
                "memoryId": MEMORY_ID,
                "records": [
                    {
                        "requestIdentifier": ANY,
                        "namespaces": [shared],
                        "content": {"text": "The office is in Lisbon."},
                        "timestamp": ANY,
                    }
                ],
                "clientToken": ANY,
            },
        )
        token = token_for(world.a, turn(world.a, world.a.owner, catalogue))
        response = post(client, REMEMBER, token, content="The office is in Lisbon.", scope="shared", agent="helpdesk")
        stub.assert_no_pending_responses()
    assert response.status_code == 201
    assert response.json()["id"] == f"agentcore-{record_id}" and response.json()["namespace"] == shared


def test_the_gateway_answers_problem_json_when_the_portal_has_no_aws_credentials(client, world, monkeypatch, settings):
    import botocore.session
    from botocore.credentials import CredentialResolver

    from tests.memory.helpers import REMEMBER, post, token_for, turn

    session = botocore.session.Session()
    session.register_component("credential_provider", CredentialResolver(providers=[]))
    catalogue = _silo_gateway(
        world, monkeypatch, settings, session.create_client("bedrock-agentcore", region_name="eu-west-1")
    )
    token = token_for(world.a, turn(world.a, world.a.member, catalogue))
    response = post(client, REMEMBER, token, content="My name is Ada.", agent="helpdesk")
    assert response.status_code == 503
    assert response["Content-Type"].startswith("application/problem+json")
    assert response.json()["detail"] == "The memory store is unavailable; try again later."

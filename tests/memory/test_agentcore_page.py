"""The Memory page of a silo tenant bound to AgentCore Memory lists that store's records.

The records live in AgentCore (agents/memory/stores.py), not in the portal's table, so the
page asks AgentCore (list_memory_records, checked by botocore's Stubber against the real
service model): the member's namespaces (namespacePath /tenant/<t>/user/<u>) and the
tenant's shared one, and says where they live; the member may delete their own. A record of a namespace the
member may not read is never shown; AgentCore unreachable is a notice, not a 500.
"""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import Stubber

from agents.memory import stores
from tests.memory.helpers import entitle, memory_catalogue

MEMORY_ID = "alpha_memory-a1B2c3D4e5"


def summary(record_id, text, namespace):
    return {
        "memoryRecordId": f"mem-{record_id:036d}",
        "content": {"text": text},
        "memoryStrategyId": "semantic-abc123",
        "namespaces": [namespace],
        "createdAt": datetime(2026, 11, 30, 12, 0, tzinfo=UTC),
    }


@pytest.fixture
def silo(world, monkeypatch, settings):
    settings.AGENT_RUNTIME = "agentcore"  # AWS bindings apply (not the embedded local runtime)
    entitle(world.a.tenant)
    memory_catalogue(world.a.tenant, world.b.tenant)
    tenant = world.a.tenant
    tenant.deployment_model = "silo"
    tenant.resource_bindings = {**(tenant.resource_bindings or {}), "memory_id": MEMORY_ID}
    tenant.save()
    client = boto3.client(
        "bedrock-agentcore", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    monkeypatch.setattr(stores, "make_client", lambda region: client)
    with Stubber(client) as stub:
        yield stub


def test_it_lists_the_members_and_the_shared_records_from_agentcore(client, world, silo):
    t, u = world.a.tenant.pk, world.a.member.pk
    silo.add_response(
        "list_memory_records",
        {
            "memoryRecordSummaries": [
                summary(1, "My name is Ada.", f"/tenant/{t}/user/{u}/agent/helpdesk"),
                summary(2, "Someone else's fact.", f"/tenant/{t}/user/{u + 1000}"),  # never shown
            ]
        },
        {"memoryId": MEMORY_ID, "namespacePath": f"/tenant/{t}/user/{u}", "maxResults": 100},
    )
    silo.add_response(
        "list_memory_records",
        {"memoryRecordSummaries": [summary(3, "Support hours are 9 to 17.", f"/tenant/{t}/shared")]},
        {"memoryId": MEMORY_ID, "namespace": f"/tenant/{t}/shared", "maxResults": 100},
    )
    client.force_login(world.a.member)
    page = client.get("/t/alpha/memory/").content.decode()
    silo.assert_no_pending_responses()
    assert 'id="memory-in-agentcore"' in page and MEMORY_ID in page
    assert "My name is Ada." in page and "Support hours are 9 to 17." in page
    assert "Someone else" not in page
    assert f'action="/t/alpha/memory/mem-{1:036d}/delete/"' in page  # the member's own record
    assert f"/memory/mem-{2:036d}/delete/" not in page and f"/memory/shared/mem-{3:036d}/delete/" not in page


def test_it_says_so_when_agentcore_cannot_be_reached(client, world, silo):
    silo.add_client_error("list_memory_records", service_error_code="ThrottlingException", http_status_code=429)
    client.force_login(world.a.admin)
    response = client.get("/t/alpha/memory/")
    assert response.status_code == 200
    assert 'id="memory-store-unavailable"' in response.content.decode()

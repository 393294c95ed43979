"""Knowledge of a tenant bound to its own Bedrock knowledge base, on embedded defaults.

AGENT_RUNTIME=local: a tenant's AWS bindings do not apply, so `bedrock` knowledge bases are
served from the portal's own index (their documents are chunked and indexed locally
anyway): nothing goes to S3, no Bedrock retrieve, no boto3 client at all — and never the
pooled Bedrock base, which is other tenants'. The knowledge page says so in one line. With
AGENT_RUNTIME=agentcore the Bedrock path is taken as before (tests/knowledge/test_bedrock.py).
"""

from __future__ import annotations

import pytest

from agents.knowledge import bedrock, retrieval, services
from agents.knowledge.models import Backend, Document
from tenants.context import tenant_context
from tests.aws_guard import refuse_aws_clients
from tests.knowledge.helpers import actor_for, entitle, ingest, make_kb

SILO_KB = "SILOKB0001"


@pytest.fixture
def silo(world, monkeypatch, settings):
    settings.AGENT_RUNTIME = "local"
    settings.KNOWLEDGE_BEDROCK_KB_ID = "POOLKB0001"  # configured, and still never used for a bound tenant
    settings.KNOWLEDGE_S3_BUCKET = "tenant-portal-knowledge"
    tenant = world.a.tenant
    tenant.deployment_model = "silo"
    tenant.resource_bindings = {"knowledge_base_id": SILO_KB, "knowledge_data_source_id": "SILODS0001"}
    tenant.save(update_fields=["deployment_model", "resource_bindings"])
    entitle(tenant)
    asked = refuse_aws_clients(monkeypatch)
    yield tenant
    assert asked == [], "an AWS client was created on embedded defaults"


def test_a_bedrock_base_is_ingested_searched_and_deleted_in_the_portals_own_index(world, silo):
    kb = make_kb(world.a, backend=Backend.BEDROCK)
    document = ingest(world.a, kb, "policy.txt", "Refunds are paid within 60 days of the return.")
    assert document.status == "ready", document.error
    assert document.external_key == ""  # never synced to S3

    with tenant_context(silo):
        hits = retrieval.search("refund days", [kb], k=3)
        assert [h.chunk.document_id for h in hits] == [document.pk]
        services.delete_document(actor_for(world.a), document)
        assert not Document.objects.filter(pk=document.pk).exists()


def test_the_knowledge_page_says_which_binding_is_not_used_and_why(client, world, silo):
    client.force_login(world.a.admin)
    page = client.get("/t/alpha/knowledge/").content.decode()
    assert 'id="kb-binding-unused"' in page
    assert f"Bound to Bedrock knowledge base <code>{SILO_KB}</code>" in page
    assert "this portal runs on embedded defaults, so the portal's own index is used" in page


def test_with_aws_resources_on_a_bedrock_base_goes_to_bedrock_again(world, silo, settings):
    settings.AGENT_RUNTIME = "agentcore"
    assert bedrock.in_use() is True
    assert bedrock.knowledge_base_id(silo) == (SILO_KB, False)

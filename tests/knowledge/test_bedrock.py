"""The bedrock backend, against botocore's Stubber (which validates every call against the service model).

Pooled tenants share one Bedrock knowledge base and every retrieve carries the
tenant_id filter; silo tenants query their own knowledge base id from their
resource bindings. Documents go to S3 with a .metadata.json sidecar naming the tenant.
"""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.stub import ANY, Stubber

from agents.knowledge import bedrock, retrieval
from agents.knowledge.models import Backend
from tenants.context import tenant_context
from tests.knowledge.helpers import actor_for, entitle, ingest, make_kb

POOLED_KB = "POOLKB0001"
POOLED_SOURCE = "POOLDS0001"
SILO_KB = "SILOKB0001"
SILO_SOURCE = "SILODS0001"
BUCKET = "tenant-portal-knowledge"


@pytest.fixture
def stubs(monkeypatch, settings):
    settings.AGENT_RUNTIME = "agentcore"  # AWS bindings apply (on embedded defaults: test_embedded_defaults.py)
    settings.KNOWLEDGE_BEDROCK_KB_ID = POOLED_KB
    settings.KNOWLEDGE_BEDROCK_DATA_SOURCE_ID = POOLED_SOURCE
    settings.KNOWLEDGE_S3_BUCKET = BUCKET
    clients = {
        name: boto3.client(name, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
        for name in ("s3", "bedrock-agent", "bedrock-agent-runtime")
    }
    stubbers = {name: Stubber(client) for name, client in clients.items()}
    for stubber in stubbers.values():
        stubber.activate()
    monkeypatch.setattr(bedrock, "make_client", lambda service, region: clients[service])
    stubbers["sent_to_s3"] = []
    clients["s3"].meta.events.register(
        "before-parameter-build.s3.PutObject", lambda params, **kw: stubbers["sent_to_s3"].append(dict(params))
    )
    yield stubbers
    stubbers.pop("sent_to_s3")
    for stubber in stubbers.values():
        stubber.assert_no_pending_responses()
        stubber.deactivate()


def expect_sync(stubs, tenant, kb_id: str, source: str):
    stubs["s3"].add_response("put_object", {}, {"Bucket": BUCKET, "Key": ANY, "Body": ANY})
    stubs["s3"].add_response(
        "put_object", {}, {"Bucket": BUCKET, "Key": ANY, "Body": ANY, "ContentType": "application/json"}
    )
    stubs["bedrock-agent"].add_response(
        "start_ingestion_job",
        {
            "ingestionJob": {
                "knowledgeBaseId": kb_id,
                "dataSourceId": source,
                "ingestionJobId": "JOB0000001",
                "status": "STARTING",
                "startedAt": "2026-11-28T00:00:00Z",
                "updatedAt": "2026-11-28T00:00:00Z",
            }
        },
        {"knowledgeBaseId": kb_id, "dataSourceId": source},
    )


def retrieval_result(tenant_id, document_id, text, score=0.9):
    return {
        "content": {"text": text, "type": "TEXT"},
        "location": {"type": "S3", "s3Location": {"uri": f"s3://{BUCKET}/x"}},
        "score": score,
        "metadata": {"tenant_id": str(tenant_id), "document_id": str(document_id)},
    }


def test_a_pooled_tenants_document_goes_to_s3_with_a_tenant_sidecar(world, stubs):
    entitle(world.a.tenant)
    kb = make_kb(world.a, backend=Backend.BEDROCK)
    expect_sync(stubs, world.a.tenant, POOLED_KB, POOLED_SOURCE)
    document = ingest(world.a, kb, "policy.txt", "Refunds within 30 days.")
    assert document.status == "ready", document.error
    assert document.external_key == f"tenants/{world.a.tenant.pk}/kb-{kb.pk}/doc-{document.pk}/policy.txt"
    [original, sidecar] = stubs["sent_to_s3"]
    assert (original["Key"], original["Body"]) == (document.external_key, b"Refunds within 30 days.")
    assert sidecar["Key"] == f"{document.external_key}.metadata.json"
    assert json.loads(sidecar["Body"]) == {
        "metadataAttributes": {
            "tenant_id": str(world.a.tenant.pk),
            "knowledge_base_id": str(kb.pk),
            "document_id": str(document.pk),
            "title": "policy",
        }
    }


def test_a_pooled_query_filters_by_tenant_inside_bedrock_and_drops_anything_foreign(world, stubs):
    entitle(world.a.tenant, world.b.tenant)
    kb = make_kb(world.a, backend=Backend.BEDROCK)
    expect_sync(stubs, world.a.tenant, POOLED_KB, POOLED_SOURCE)
    document = ingest(world.a, kb, "policy.txt", "Refunds within 30 days.")
    stubs["bedrock-agent-runtime"].add_response(
        "retrieve",
        {
            "retrievalResults": [
                retrieval_result(world.b.tenant.pk, document.pk, "Refunds within 45 days.", 0.95),
                retrieval_result(world.a.tenant.pk, document.pk, "Refunds within 30 days.", 0.9),
            ]
        },
        {
            "knowledgeBaseId": POOLED_KB,
            "retrievalQuery": {"text": "refund window"},
            "retrievalConfiguration": {
                "vectorSearchConfiguration": {
                    "numberOfResults": 5,
                    "filter": {
                        "andAll": [
                            {"equals": {"key": "tenant_id", "value": str(world.a.tenant.pk)}},
                            {"in": {"key": "knowledge_base_id", "value": [str(kb.pk)]}},
                        ]
                    },
                }
            },
        },
    )
    with tenant_context(world.a.tenant):
        hits = retrieval.search("refund window", [kb], k=5)
    assert [(h.chunk.document_id, h.chunk.text, h.score) for h in hits] == [
        (document.pk, "Refunds within 30 days.", 0.9)
    ]


def test_a_silo_tenant_queries_its_own_knowledge_base(world, stubs):
    tenant = world.b.tenant
    tenant.deployment_model = "silo"
    tenant.resource_bindings = {"knowledge_base_id": SILO_KB, "knowledge_data_source_id": SILO_SOURCE}
    tenant.save(update_fields=["deployment_model", "resource_bindings"])
    entitle(tenant)
    kb = make_kb(world.b, backend=Backend.BEDROCK)
    expect_sync(stubs, tenant, SILO_KB, SILO_SOURCE)
    document = ingest(world.b, kb, "policy.txt", "Refunds within 45 days.")
    stubs["bedrock-agent-runtime"].add_response(
        "retrieve",
        {"retrievalResults": [retrieval_result(tenant.pk, document.pk, "Refunds within 45 days.")]},
        {
            "knowledgeBaseId": SILO_KB,
            "retrievalQuery": {"text": "refund"},
            "retrievalConfiguration": {
                "vectorSearchConfiguration": {
                    "numberOfResults": 3,
                    "filter": {"in": {"key": "knowledge_base_id", "value": [str(kb.pk)]}},
                }
            },
        },
    )
    with tenant_context(tenant):
        hits = retrieval.search("refund", [kb], k=3)
    assert [h.chunk.text for h in hits] == ["Refunds within 45 days."]


def test_deleting_a_document_removes_it_and_its_sidecar_from_s3(world, stubs):
    entitle(world.a.tenant)
    kb = make_kb(world.a, backend=Backend.BEDROCK)
    expect_sync(stubs, world.a.tenant, POOLED_KB, POOLED_SOURCE)
    document = ingest(world.a, kb, "policy.txt", "Refunds within 30 days.")
    key = document.external_key
    stubs["s3"].add_response(
        "delete_objects",
        {},
        {"Bucket": BUCKET, "Delete": {"Objects": [{"Key": key}, {"Key": f"{key}.metadata.json"}]}},
    )
    expect_start = {
        "ingestionJob": {
            "knowledgeBaseId": POOLED_KB,
            "dataSourceId": POOLED_SOURCE,
            "ingestionJobId": "JOB0000002",
            "status": "STARTING",
            "startedAt": "2026-11-28T00:00:00Z",
            "updatedAt": "2026-11-28T00:00:00Z",
        }
    }
    stubs["bedrock-agent"].add_response(
        "start_ingestion_job", expect_start, {"knowledgeBaseId": POOLED_KB, "dataSourceId": POOLED_SOURCE}
    )
    from agents.knowledge import services

    with tenant_context(world.a.tenant):
        services.delete_document(actor_for(world.a), document)

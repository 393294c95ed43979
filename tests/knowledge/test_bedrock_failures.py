"""A Bedrock knowledge base that fails is a clear message, never a 500.

AWS answering with an error (botocore's Stubber, add_client_error), not answering
(EndpointConnectionError, ReadTimeoutError raised where the request would be sent),
no credentials, or the tenant's role refused by STS (tenants.aws.TenantCredentialsError):
the search page keeps the query and says why, the API answers problem JSON (503 with
Retry-After when waiting helps, 502 when the set-up must be fixed), the knowledge gateway
refuses so that the runtime answers the turn without passages, and a document whose sync
fails says why. AGENT_RUNTIME=agentcore, as in test_bedrock.py: AWS bindings apply.
"""

# ruff: noqa: F811 (the stubs and sts fixtures, imported from the modules that define them, are parameters)

from __future__ import annotations

import json
import logging

import pytest
from botocore.exceptions import EndpointConnectionError, NoCredentialsError, ReadTimeoutError

from agents.knowledge import retrieval
from agents.knowledge.gateway import InProcessKnowledgeGateway
from agents.knowledge.models import AgentKnowledge, Backend, Document
from agents.runtime.contract import Citation, Delta
from agents.runtime.knowledge import KnowledgeUnavailable
from tenants.context import tenant_context
from tests.agents.helpers import make_catalogue, make_turn
from tests.knowledge.helpers import entitle, ingest, make_kb
from tests.knowledge.test_bedrock import POOLED_KB, POOLED_SOURCE, expect_sync, stubs  # noqa: F401 (fixture)
from tests.knowledge.test_gateway import retrieve, token_for
from tests.knowledge.test_runtime_retrieval import host_with, prepared_turn
from tests.portal.helpers import problem
from tests.tenants.test_aws_credentials import ROLE_A, silo, sts  # noqa: F401 (fixture)

HX = {"HTTP_HX_REQUEST": "true"}
ENDPOINT = "https://bedrock-agent-runtime.us-east-1.amazonaws.com/knowledgebases/POOLKB0001/retrieve"

# (AWS error code, its HTTP status, the portal's answer, words of the reason)
CLIENT_ERRORS = [
    ("ThrottlingException", 429, 503, "AWS answered ThrottlingException"),
    ("AccessDeniedException", 403, 502, "AWS answered AccessDeniedException"),
    ("ResourceNotFoundException", 404, 502, "AWS answered ResourceNotFoundException"),
    ("ValidationException", 400, 502, "AWS answered ValidationException"),
]
# (botocore exception, the portal's answer, words of the reason, the code logged)
BOTO_ERRORS = [
    (
        EndpointConnectionError(endpoint_url=ENDPOINT),
        503,
        "its endpoint could not be reached",
        "EndpointConnectionError",
    ),
    (ReadTimeoutError(endpoint_url=ENDPOINT), 503, "it did not answer in time", "ReadTimeoutError"),
    (NoCredentialsError(), 502, "the portal has no AWS credentials for it", "NoCredentialsError"),
]


@pytest.fixture
def bedrock_kb(world, stubs):
    entitle(world.a.tenant, world.b.tenant)
    kb = make_kb(world.a, name="Policies", backend=Backend.BEDROCK)
    expect_sync(stubs, world.a.tenant, POOLED_KB, POOLED_SOURCE)
    document = ingest(world.a, kb, "policy.txt", "A refund is possible within 30 days of purchase.")
    assert document.status == "ready", document.error
    return kb


def fail_with_code(stubs, code: str, status: int):
    stubs["bedrock-agent-runtime"].add_client_error(
        "retrieve", service_error_code=code, service_message=f"{code} for the test", http_status_code=status
    )


def fail_with(stubs, exc: Exception):
    """`exc` where botocore would send the Retrieve request: nothing reaches the Stubber."""

    def raise_it(**kwargs):
        raise exc

    stubs["bedrock-agent-runtime"].client.meta.events.register_first(
        "provide-client-params.bedrock-agent-runtime.Retrieve", raise_it
    )


def search_api(client, kb, query="refund days"):
    return client.post(
        f"/api/v1/tenants/alpha/knowledge-bases/{kb.pk}/search/",
        data=json.dumps({"query": query, "k": 3}),
        content_type="application/json",
    )


# --- the REST API's search action -------------------------------------------------------------------


@pytest.mark.parametrize(("code", "aws_status", "status", "reason"), CLIENT_ERRORS)
def test_the_api_search_answers_an_aws_error_as_a_problem(
    client, world, stubs, bedrock_kb, caplog, code, aws_status, status, reason
):
    fail_with_code(stubs, code, aws_status)
    client.force_login(world.a.admin)
    with caplog.at_level(logging.WARNING, logger="agents.knowledge"):
        response = search_api(client, bedrock_kb)
    body = problem(response, status)
    assert reason in body["detail"]
    assert response.get("Retry-After") == ("30" if status == 503 else None)
    assert code in caplog.text


@pytest.mark.parametrize(("exc", "status", "reason", "logged"), BOTO_ERRORS)
def test_the_api_search_answers_a_failed_call_as_a_problem(
    client, world, stubs, bedrock_kb, caplog, exc, status, reason, logged
):
    fail_with(stubs, exc)
    client.force_login(world.a.admin)
    with caplog.at_level(logging.WARNING, logger="agents.knowledge"):
        response = search_api(client, bedrock_kb)
    body = problem(response, status)
    assert reason in body["detail"]
    assert response.get("Retry-After") == ("30" if status == 503 else None)
    assert logged in caplog.text


def test_a_role_that_cannot_be_assumed_is_a_502_without_the_role_arn(client, world, sts, settings, caplog):
    tenant = silo(world.a.tenant, knowledge_base_id="SILOKB0001")
    entitle(tenant)
    settings.AGENT_RUNTIME = "local"  # chunked in the portal only: nothing to sync
    kb = make_kb(world.a, backend=Backend.BEDROCK)
    ingest(world.a, kb, "policy.txt", "A refund is possible within 30 days.")
    settings.AGENT_RUNTIME = "agentcore"  # now searched in the tenant's own Bedrock knowledge base
    sts.stub.add_client_error("assume_role", "AccessDenied", "not authorized to perform sts:AssumeRole", 403)
    client.force_login(world.a.admin)
    with caplog.at_level(logging.WARNING):
        response = search_api(client, kb)
    body = problem(response, 502)
    assert "AWS role could not be assumed" in body["detail"]
    assert ROLE_A not in response.content.decode()
    assert "AccessDenied" in caplog.text


def test_sts_out_of_reach_is_a_503_to_try_again(client, world, sts, settings):
    tenant = silo(world.a.tenant, knowledge_base_id="SILOKB0001")
    entitle(tenant)
    settings.AGENT_RUNTIME = "local"
    kb = make_kb(world.a, backend=Backend.BEDROCK)
    settings.AGENT_RUNTIME = "agentcore"

    def unreachable(**kwargs):
        raise EndpointConnectionError(endpoint_url="https://sts.eu-west-1.amazonaws.com/")

    sts.client.meta.events.register_first("provide-client-params.sts.AssumeRole", unreachable)
    client.force_login(world.a.admin)
    response = search_api(client, kb)
    body = problem(response, 503)
    assert "AWS role could not be assumed. Try again in a moment." in body["detail"]
    assert response["Retry-After"] == "30"


# --- the knowledge search page ----------------------------------------------------------------------


@pytest.mark.parametrize(("code", "aws_status", "status", "reason"), CLIENT_ERRORS[:2])
def test_the_search_page_says_why_and_keeps_the_query(
    client, world, stubs, bedrock_kb, code, aws_status, status, reason
):
    fail_with_code(stubs, code, aws_status)
    client.force_login(world.a.admin)
    response = client.get(f"/t/alpha/knowledge/{bedrock_kb.pk}/search/", {"q": "refund window"})
    page = response.content.decode()
    assert response.status_code == 200
    assert 'id="kb-search-unavailable"' in page and reason in page
    assert 'value="refund window"' in page
    assert "No passage matches" not in page


def test_the_search_page_fragment_says_why_too(client, world, stubs, bedrock_kb):
    fail_with(stubs, EndpointConnectionError(endpoint_url=ENDPOINT))
    client.force_login(world.a.admin)
    response = client.get(f"/t/alpha/knowledge/{bedrock_kb.pk}/search/", {"q": "refund"}, **HX)
    assert response.status_code == 200  # htmx swaps only a 2xx answer in
    fragment = response.content.decode()
    assert 'id="kb-search-unavailable"' in fragment and "its endpoint could not be reached" in fragment
    assert "Try again in a moment." in fragment


# --- the knowledge gateway and the turn -------------------------------------------------------------


@pytest.fixture
def turn_scene(world, bedrock_kb):
    catalogue = make_catalogue(world.a.tenant, world.b.tenant)
    _, _, turn = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk, "Refund?")
    return {"catalogue": catalogue, "turn": turn}


@pytest.mark.parametrize(("code", "aws_status", "status", "reason"), [CLIENT_ERRORS[0], CLIENT_ERRORS[1]])
def test_the_gateway_refuses_with_a_problem(client, world, stubs, turn_scene, caplog, code, aws_status, status, reason):
    fail_with_code(stubs, code, aws_status)
    with caplog.at_level(logging.WARNING, logger="agents.knowledge"):
        response = retrieve(client, token_for(world.a, turn_scene["turn"]), k=3, agent="helpdesk")
    body = problem(response, status)
    assert reason in body["detail"]
    assert code in caplog.text
    # A runtime may try again after a throttle; a refused set-up is not worth a retry.
    assert response.get("Retry-After") == ("30" if status == 503 else None)


def test_the_in_process_gateway_turns_it_into_knowledge_unavailable(world, stubs, turn_scene):
    fail_with_code(stubs, "ThrottlingException", 429)
    request, context = prepared_turn(world.a, turn_scene["catalogue"], "Within how many days is a refund possible?")
    caller = host_with(None).prepare(context.to_headers(), request.to_json()).caller
    with pytest.raises(KnowledgeUnavailable, match="503"):
        InProcessKnowledgeGateway().retrieve(caller, "refund", agent_id="helpdesk")


def test_the_turn_still_answers_without_passages(world, stubs, turn_scene, caplog):
    fail_with_code(stubs, "AccessDeniedException", 403)
    host = host_with(InProcessKnowledgeGateway())
    request, context = prepared_turn(world.a, turn_scene["catalogue"], "Within how many days is a refund possible?")
    with caplog.at_level(logging.WARNING):
        events = list(host.run(host.prepare(context.to_headers(), request.to_json())))
    assert [e.type for e in events][-2:] == ["usage", "done"]
    assert not any(isinstance(e, Citation) for e in events)
    assert "answering without knowledge" in caplog.text
    # The member is told the answer does not draw on the knowledge bases, not left to guess.
    answer = "".join(e.text for e in events if isinstance(e, Delta))
    assert answer.endswith("could not be searched just now, so this answer does not draw on them._")


# --- several bases on different backends ------------------------------------------------------------


def test_a_failing_bedrock_ranking_leaves_the_local_bases_hits(world, stubs, bedrock_kb, caplog):
    local = make_kb(world.a, name="Local handbook")
    ingest(world.a, local, "shipping.txt", "Parcels leave within two days; a refund takes five days.")
    fail_with_code(stubs, "ThrottlingException", 429)
    with tenant_context(world.a.tenant), caplog.at_level(logging.WARNING, logger="agents.knowledge"):
        hits = retrieval.search("refund days", [bedrock_kb, local], k=5)
    assert [h.chunk.knowledge_base_id for h in hits] == [local.pk]
    assert "ThrottlingException" in caplog.text


def test_a_search_that_misses_some_bases_names_them(world, stubs, bedrock_kb):
    local = make_kb(world.a, name="Local handbook")
    ingest(world.a, local, "shipping.txt", "Parcels leave within two days; a refund takes five days.")
    fail_with_code(stubs, "ThrottlingException", 429)
    with tenant_context(world.a.tenant):
        found = retrieval.search_reporting("refund days", [bedrock_kb, local], k=5)
    assert [h.chunk.knowledge_base_id for h in found.hits] == [local.pk]
    assert found.missed == ["Policies"]


def test_a_search_that_reaches_every_base_misses_none(world, stubs, bedrock_kb):
    local = make_kb(world.a, name="Local handbook")
    ingest(world.a, local, "shipping.txt", "Parcels leave within two days; a refund takes five days.")
    with tenant_context(world.a.tenant):
        found = retrieval.search_reporting("refund days", [local], k=5)
    assert found.hits and found.missed == []


def test_an_agent_reading_both_gets_the_local_passages_through_the_gateway(
    client, world, stubs, bedrock_kb, turn_scene
):
    local = make_kb(world.a, name="Local handbook")
    ingest(world.a, local, "shipping.txt", "Parcels leave within two days; a refund takes five days.")
    with tenant_context(world.a.tenant):
        helpdesk = turn_scene["catalogue"].helpdesk
        AgentKnowledge.objects.bulk_create(
            [
                AgentKnowledge(tenant_id=world.a.tenant.pk, agent=helpdesk, knowledge_base=kb)
                for kb in (bedrock_kb, local)
            ]
        )
    fail_with_code(stubs, "ThrottlingException", 429)
    response = retrieve(client, token_for(world.a, turn_scene["turn"]), k=3, agent="helpdesk", query="refund days")
    assert response.status_code == 200
    assert [p["knowledge_base_id"] for p in response.json()["passages"]] == [local.pk]
    assert response.json()["unsearched"] == ["Policies"]


def link_both(world, bedrock_kb, turn_scene):
    local = make_kb(world.a, name="Local handbook")
    ingest(world.a, local, "shipping.txt", "Parcels leave within two days; a refund takes five days.")
    with tenant_context(world.a.tenant):
        AgentKnowledge.objects.bulk_create(
            [
                AgentKnowledge(tenant_id=world.a.tenant.pk, agent=turn_scene["catalogue"].helpdesk, knowledge_base=kb)
                for kb in (bedrock_kb, local)
            ]
        )
    return local


def test_the_gateway_answers_an_empty_unsearched_list_when_every_base_answered(
    client, world, stubs, bedrock_kb, turn_scene
):
    link_both(world, bedrock_kb, turn_scene)
    stubs["bedrock-agent-runtime"].add_response("retrieve", {"retrievalResults": []})
    response = retrieve(client, token_for(world.a, turn_scene["turn"]), k=3, agent="helpdesk", query="refund days")
    assert response.status_code == 200
    assert response.json()["unsearched"] == []


@pytest.mark.parametrize("name", ["Policies", "Policies **[click](javascript:alert(1))**"])
def test_an_answer_from_some_bases_ends_with_a_note_naming_the_missed_ones(world, stubs, bedrock_kb, turn_scene, name):
    with tenant_context(world.a.tenant):
        type(bedrock_kb).objects.filter(pk=bedrock_kb.pk).update(name=name)
    link_both(world, bedrock_kb, turn_scene)
    fail_with_code(stubs, "ThrottlingException", 429)
    host = host_with(InProcessKnowledgeGateway())
    request, context = prepared_turn(world.a, turn_scene["catalogue"], "Within how many days is a refund possible?")
    events = list(host.run(host.prepare(context.to_headers(), request.to_json())))
    assert [e.type for e in events][-2:] == ["usage", "done"]
    answer = "".join(e.text for e in events if isinstance(e, Delta))
    assert "five days" in answer  # the local base still answered
    note = answer.rsplit("\n\n", 1)[-1]
    assert note.startswith("_") and note.endswith(
        "could not be searched just now, so this answer does not draw on it._"
    )
    # The name is the tenant's text: shown as words, never as Markdown that could link or shout.
    assert "javascript:" not in note or "\\[click\\]" in note
    assert "Policies" in note


# --- document sync ----------------------------------------------------------------------------------


def test_a_document_whose_role_cannot_be_assumed_says_so_without_the_arn(world, sts, settings, caplog):
    settings.KNOWLEDGE_BEDROCK_DATA_SOURCE_ID = "POOLDS0001"
    settings.KNOWLEDGE_S3_BUCKET = "tenant-portal-knowledge"
    tenant = silo(world.a.tenant, knowledge_base_id="SILOKB0001", knowledge_data_source_id="SILODS0001")
    entitle(tenant)
    kb = make_kb(world.a, backend=Backend.BEDROCK)
    sts.stub.add_client_error("assume_role", "AccessDenied", "not authorized to perform sts:AssumeRole", 403)
    with caplog.at_level(logging.WARNING):
        document = ingest(world.a, kb, "policy.txt", "A refund is possible within 30 days.")
    assert document.status == "failed"
    assert "internal error" not in document.error
    assert "AWS role could not be assumed" in document.error
    assert "arn:aws" not in document.error
    assert ROLE_A in caplog.text and "AccessDenied" in caplog.text


def test_a_document_that_s3_refuses_says_why(world, stubs):
    entitle(world.a.tenant)
    kb = make_kb(world.a, backend=Backend.BEDROCK)
    stubs["s3"].add_client_error("put_object", service_error_code="AccessDenied", http_status_code=403)
    document = ingest(world.a, kb, "policy.txt", "A refund is possible within 30 days.")
    assert document.status == "failed"
    assert document.error.startswith("Amazon S3 did not take the document: AWS answered AccessDenied.")
    assert "Ask your provider's operator" in document.error


def test_a_document_whose_ingestion_job_is_throttled_says_why(world, stubs):
    entitle(world.a.tenant)
    kb = make_kb(world.a, backend=Backend.BEDROCK)
    stubs["s3"].add_response("put_object", {})
    stubs["s3"].add_response("put_object", {})
    stubs["bedrock-agent"].add_client_error(
        "start_ingestion_job", service_error_code="ThrottlingException", http_status_code=429
    )
    document = ingest(world.a, kb, "policy.txt", "A refund is possible within 30 days.")
    assert document.status == "failed"
    assert document.error.startswith(
        "Amazon Bedrock did not start indexing the document: AWS answered ThrottlingException."
    )
    assert "Try again in a moment." in document.error


def test_deleting_a_document_that_s3_refuses_to_delete_says_why_and_keeps_it(client, world, stubs, bedrock_kb):
    with tenant_context(world.a.tenant):
        document = Document.objects.get(knowledge_base=bedrock_kb)
    stubs["s3"].add_client_error("delete_objects", service_error_code="AccessDenied", http_status_code=403)
    client.force_login(world.a.admin)
    response = client.post(f"/t/alpha/knowledge/documents/{document.pk}/delete/", follow=True)
    page = response.content.decode()
    assert response.status_code == 200
    assert "The document was not deleted. Amazon S3 did not delete the document: AWS answered AccessDenied." in page
    with tenant_context(world.a.tenant):
        assert Document.objects.filter(pk=document.pk).exists()

"""The hybrid backend's embedding service is paid per token: every call is metered to the
tenant, exactly once (billing.metering.record_embedding).

Embedding tokens are the provider's cost attributed to the tenant — priced into the
roll-up's `cost` (the operator's cost and margin) and shown as `embedding_tokens` — and
never the plan's tokens: no turn, no quota, no overage.
"""

from __future__ import annotations

import io
import json
import math
from decimal import Decimal

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from django.db.models import Sum

from agents.knowledge import hybrid, services
from agents.knowledge.models import Backend, Document, DocumentStatus
from billing.models import ModelPrice, MonthlyUsage, PriceBook, UsageDaily, UsageEvent
from tenants.context import tenant_context
from tests.agents.helpers import make_catalogue, make_turn
from tests.knowledge.helpers import entitle, ingest, make_kb, upload
from tests.knowledge.test_hybrid import DOCS, embeddings_server, fake_vector

MODEL = "text-embedding-test"
PRICE_PER_1K = Decimal("0.02")


def seven_tokens_a_text(texts: list[str]) -> dict:
    return {"prompt_tokens": 7 * len(texts), "total_tokens": 7 * len(texts)}


@pytest.fixture
def priced(db):
    book = PriceBook.objects.create(version=1, effective_from="2000-01-01T00:00:00Z")
    ModelPrice.objects.create(price_book=book, model_key=MODEL, per_1k_input=PRICE_PER_1K, per_1k_output=0)
    return book


@pytest.fixture
def reporting_server(settings):
    """An OpenAI-compatible server that reports 7 prompt tokens per text."""
    with embeddings_server(usage=seven_tokens_a_text) as (url, calls):
        settings.KNOWLEDGE_EMBEDDINGS, settings.KNOWLEDGE_EMBEDDINGS_URL = "openai", url
        settings.KNOWLEDGE_EMBEDDINGS_MODEL = MODEL
        yield calls


def embedding_events(side) -> list[UsageEvent]:
    with tenant_context(side.tenant):
        return list(UsageEvent.objects.filter(kind="embedding").order_by("created_at", "id"))


def texts_sent(calls: list[dict]) -> list[str]:
    return [text for call in calls for text in call["input"]]


def test_ingesting_a_document_bills_the_tokens_the_service_reported(world, priced, reporting_server):
    entitle(world.a.tenant)
    kb = make_kb(world.a, backend=Backend.HYBRID)

    document = ingest(world.a, kb, "refunds.txt", DOCS["refunds.txt"])

    assert document.status == DocumentStatus.READY
    chunks = len(texts_sent(reporting_server))
    [event] = embedding_events(world.a)
    assert (event.model_key, event.input_tokens, event.output_tokens) == (MODEL, 7 * chunks, 0)
    assert event.estimated is False
    assert event.cost == PRICE_PER_1K * 7 * chunks / 1000
    assert event.price_book_version == priced.version
    assert event.user_id == world.a.user("admin").pk  # who uploaded it
    from billing.metering import document_embedding_key

    assert event.invocation_id == document_embedding_key(world.a.tenant.pk, document.pk, 1)


def test_the_same_version_ingested_again_is_billed_once_and_a_new_version_again(world, priced, reporting_server):
    entitle(world.a.tenant)
    kb = make_kb(world.a, backend=Backend.HYBRID)
    document = ingest(world.a, kb, "refunds.txt", DOCS["refunds.txt"])
    with tenant_context(world.a.tenant):
        # A redelivered task that gets to embed the same version again (the claim reset).
        Document.objects.filter(pk=document.pk).update(status=DocumentStatus.UPLOADED)
        assert services.ingest_document(world.a.tenant, document.pk, document.version) == "ready"
    assert len(reporting_server) == 2
    assert len(embedding_events(world.a)) == 1

    ingest(world.a, kb, "refunds.txt", DOCS["refunds.txt"] + " Updated.")  # version 2

    assert len(embedding_events(world.a)) == 2
    with tenant_context(world.a.tenant):
        assert UsageDaily.objects.aggregate(n=Sum("embedding_tokens"))["n"] == sum(
            e.input_tokens for e in embedding_events(world.a)
        )


def test_an_answer_without_usage_is_estimated_as_the_offline_model_does(world, priced, settings):
    entitle(world.a.tenant)
    kb = make_kb(world.a, backend=Backend.HYBRID)
    with embeddings_server() as (url, calls):
        settings.KNOWLEDGE_EMBEDDINGS, settings.KNOWLEDGE_EMBEDDINGS_URL = "openai", url
        settings.KNOWLEDGE_EMBEDDINGS_MODEL = MODEL
        ingest(world.a, kb, "refunds.txt", DOCS["refunds.txt"])

    [event] = embedding_events(world.a)
    assert event.estimated is True
    assert event.input_tokens == sum(math.ceil(len(text) / 4) for text in texts_sent(calls))


def test_embedding_tokens_are_cost_but_neither_turns_nor_plan_tokens(world, priced, reporting_server):
    entitle(world.a.tenant)
    kb = make_kb(world.a, backend=Backend.HYBRID)
    ingest(world.a, kb, "refunds.txt", DOCS["refunds.txt"])
    [event] = embedding_events(world.a)

    with tenant_context(world.a.tenant):
        daily = UsageDaily.objects.aggregate(
            turns=Sum("turns"), tokens=Sum("input_tokens"), embedding=Sum("embedding_tokens"), cost=Sum("cost")
        )
        quota_used = MonthlyUsage.objects.aggregate(n=Sum("tokens_used"))["n"]
    assert daily == {"turns": 0, "tokens": 0, "embedding": event.input_tokens, "cost": event.cost}
    assert not quota_used  # the month's token quota is the turns'


def test_a_model_missing_from_the_price_book_is_recorded_at_no_cost(world, reporting_server):
    entitle(world.a.tenant)
    kb = make_kb(world.a, backend=Backend.HYBRID)
    PriceBook.objects.create(version=1, effective_from="2000-01-01T00:00:00Z")  # lists no model

    assert ingest(world.a, kb, "refunds.txt", DOCS["refunds.txt"]).status == DocumentStatus.READY

    [event] = embedding_events(world.a)
    assert event.input_tokens > 0
    assert (event.cost, event.price_book_version) == (Decimal("0"), 1)


def titan_response(stubber, text: str, count: int | None) -> None:
    answer = {"embedding": fake_vector(text)}
    if count is not None:
        answer["inputTextTokenCount"] = count
    payload = json.dumps(answer).encode()
    stubber.add_response(
        "invoke_model",
        {"body": StreamingBody(io.BytesIO(payload), len(payload)), "contentType": "application/json"},
        {
            "modelId": "amazon.titan-embed-text-v2:0",
            "body": json.dumps({"inputText": text}),
            "contentType": "application/json",
            "accept": "application/json",
        },
    )


@pytest.fixture
def titan(settings, monkeypatch):
    settings.KNOWLEDGE_EMBEDDINGS = "bedrock"
    settings.KNOWLEDGE_EMBEDDINGS_MODEL = "amazon.titan-embed-text-v2:0"
    client = boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    monkeypatch.setattr(hybrid, "bedrock_client", lambda: client)
    with Stubber(client) as stubber:
        yield stubber


def test_titan_usage_is_its_input_text_token_count(titan):
    titan_response(titan, "first", 3)
    titan_response(titan, "second", 5)

    usage = hybrid.embedded(["first", "second"]).usage

    titan.assert_no_pending_responses()
    assert usage == hybrid.Usage("amazon.titan-embed-text-v2:0", 8, estimated=False)


def test_a_titan_answer_without_a_count_is_estimated(titan):
    titan_response(titan, "first", 3)
    titan_response(titan, "a longer second text", None)

    usage = hybrid.embedded(["first", "a longer second text"]).usage

    assert usage == hybrid.Usage("amazon.titan-embed-text-v2:0", 3 + math.ceil(20 / 4), estimated=True)


def test_ingesting_with_titan_bills_the_tenant(world, priced, titan):
    entitle(world.a.tenant)
    ModelPrice.objects.create(price_book=priced, model_key="amazon.titan-embed-text-v2:0", per_1k_input=1)
    kb = make_kb(world.a, backend=Backend.HYBRID)
    result = upload(world.a, kb, "refunds.txt", DOCS["refunds.txt"].encode())
    with tenant_context(world.a.tenant):
        document = Document.objects.get(pk=result.document.pk)
        [chunk] = services.build_chunks(document, DOCS["refunds.txt"].encode())
    titan_response(titan, f"{chunk.title}\n{chunk.text}", 12)

    with tenant_context(world.a.tenant):
        assert services.ingest_document(world.a.tenant, document.pk, document.version) == "ready"

    [event] = embedding_events(world.a)
    assert (event.input_tokens, event.cost, event.estimated) == (12, Decimal("0.012"), False)


# --- query embeddings ----------------------------------------------------------------------------


@pytest.fixture
def hybrid_scene(world, priced, reporting_server):
    entitle(world.a.tenant, world.b.tenant)
    kb = make_kb(world.a, backend=Backend.HYBRID)
    for name, text in DOCS.items():
        ingest(world.a, kb, name, text)
    return kb


def query_events(side) -> list[UsageEvent]:
    """The embedding events of queries: those of no document version's ingestion."""
    from billing.metering import document_embedding_key

    with tenant_context(side.tenant):
        documents = {
            document_embedding_key(side.tenant.pk, pk, version)
            for pk, version in Document.objects.values_list("pk", "version")
        }
    return [e for e in embedding_events(side) if e.invocation_id not in documents]


def test_a_turns_query_embedding_is_billed_once_to_the_turn(client, world, hybrid_scene):
    from agents import runtime_gateway
    from agents.knowledge.models import AgentKnowledge
    from agents.models import Invocation
    from billing.metering import turn_embedding_key

    catalogue = make_catalogue(world.a.tenant, world.b.tenant)
    with tenant_context(world.a.tenant):
        AgentKnowledge.objects.create(agent=catalogue.helpdesk, knowledge_base=hybrid_scene)
    turn = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk, "Refund?", status="running")[2]
    with tenant_context(world.a.tenant):
        invocation = Invocation.objects.select_related("agent__identity", "conversation", "user").get(pk=turn.pk)
        token = runtime_gateway.mint_act_on_behalf_token(world.a.tenant, invocation)
    body = json.dumps({"query": "How do I get my money back?"})

    for _attempt in range(2):  # the turn's retrieval run again (a retried turn)
        response = client.post(
            "/api/v1/gateway/knowledge/retrieve",
            data=body,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )
        assert response.status_code == 200
        assert "30 days" in response.json()["passages"][0]["text"]

    [event] = query_events(world.a)
    assert event.invocation_id == turn_embedding_key(turn.pk, "How do I get my money back?")
    assert (event.user_id, event.agent_slug) == (world.a.member.pk, catalogue.helpdesk.slug)
    assert event.cost == PRICE_PER_1K * 7 / 1000
    assert embedding_events(world.b) == []


def test_each_search_on_the_search_page_is_billed_to_the_person(client, world, hybrid_scene):
    client.force_login(world.a.admin)
    for _search in range(2):
        page = client.get(f"/t/alpha/knowledge/{hybrid_scene.pk}/search/", {"q": "money back"})
        assert "30 days" in page.content.decode()

    events = query_events(world.a)
    assert len(events) == 2 and len({e.invocation_id for e in events}) == 2
    assert {e.user_id for e in events} == {world.a.admin.pk}
    assert {e.agent_slug for e in events} == {""}


def test_a_query_the_service_fails_to_embed_bills_nothing(world, hybrid_scene, settings):
    from agents.knowledge import retrieval

    settings.KNOWLEDGE_EMBEDDINGS_URL = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
    with tenant_context(world.a.tenant):
        assert retrieval.search("refund card", [hybrid_scene])
    assert query_events(world.a) == []

"""The hybrid backend: embeddings from an OpenAI-compatible /embeddings server (a fake on
loopback) or Titan through boto3 (Stubber), fused with the lexical ranking by RRF."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from django.db import connection

from agents.knowledge import hybrid, retrieval
from agents.knowledge.models import Backend, Chunk
from tenants.context import tenant_context
from tests.knowledge.helpers import entitle, ingest, make_kb

# The fake model knows that these words mean the same thing; lexical search does not.
SYNONYMS = {"reimbursement": "refund", "refunds": "refund", "money": "refund", "back": "refund"}
DIMENSIONS = 32


def fake_vector(text: str) -> list[float]:
    vector = [0.0] * DIMENSIONS
    for word in text.lower().replace(".", " ").replace("?", " ").split():
        word = SYNONYMS.get(word, word)
        vector[int(hashlib.sha256(word.encode()).hexdigest(), 16) % DIMENSIONS] += 1.0
    return vector


@contextmanager
def embeddings_server(fail: bool = False, usage=None):
    """A fake OpenAI-compatible /embeddings server on loopback. `usage`: a function of the
    request's texts giving the answer's `usage` object; None answers without one (as some
    servers do)."""
    calls: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            calls.append(body)
            if fail:
                self.send_response(500)
                self.end_headers()
                return
            data = [{"index": i, "embedding": fake_vector(t)} for i, t in enumerate(body["input"])]
            answer = {"data": data}
            if usage is not None:
                answer["usage"] = usage(body["input"])
            payload = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", calls
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def openai_embeddings(settings):
    with embeddings_server() as (url, calls):
        settings.KNOWLEDGE_EMBEDDINGS = "openai"
        settings.KNOWLEDGE_EMBEDDINGS_URL = url
        yield calls


DOCS = {
    "refunds.txt": "Refund rules. A refund is paid to the card within 30 days.",
    "shipping.txt": "Shipping rules. Parcels leave the warehouse within two days.",
}


def test_it_stores_a_vector_per_chunk_and_finds_what_words_alone_miss(world, openai_embeddings):
    entitle(world.a.tenant)
    kb = make_kb(world.a, backend=Backend.HYBRID)
    for name, text in DOCS.items():
        assert ingest(world.a, kb, name, text).status == "ready"
    with tenant_context(world.a.tenant):
        assert all(c.embedding for c in Chunk.objects.all())
        assert retrieval.local_ranking(world.a.tenant.pk, [kb.pk], "reimbursement", 5) == []
        hits = retrieval.search("reimbursement", [kb], k=1)
    assert "30 days" in hits[0].chunk.text
    assert openai_embeddings[0]["model"]


def test_vectors_of_another_tenant_are_never_candidates(world, openai_embeddings):
    entitle(world.a.tenant, world.b.tenant)
    kb_a = make_kb(world.a, backend=Backend.HYBRID)
    kb_b = make_kb(world.b, backend=Backend.HYBRID)
    ingest(world.a, kb_a, "shipping.txt", DOCS["shipping.txt"])
    ingest(world.b, kb_b, "refunds.txt", DOCS["refunds.txt"])
    for k in (1, 5, 50):
        with tenant_context(world.a.tenant):
            hits = retrieval.search("reimbursement refund money back", [kb_a], k=k)
        assert {h.chunk.tenant_id for h in hits} <= {world.a.tenant.pk}
        assert all("30 days" not in h.chunk.text for h in hits)


def test_an_embedding_failure_fails_the_document_with_the_reason(world, settings):
    entitle(world.a.tenant)
    kb = make_kb(world.a, backend=Backend.HYBRID)
    with embeddings_server(fail=True) as (url, _):
        settings.KNOWLEDGE_EMBEDDINGS, settings.KNOWLEDGE_EMBEDDINGS_URL = "openai", url
        document = ingest(world.a, kb, "refunds.txt", DOCS["refunds.txt"])
    assert document.status == "failed"
    assert "embedding service failed" in document.error


def test_search_falls_back_to_words_when_the_embedding_service_is_down(world, settings, openai_embeddings):
    entitle(world.a.tenant)
    kb = make_kb(world.a, backend=Backend.HYBRID)
    ingest(world.a, kb, "refunds.txt", DOCS["refunds.txt"])
    settings.KNOWLEDGE_EMBEDDINGS_URL = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
    with tenant_context(world.a.tenant):
        hits = retrieval.search("refund card", [kb])
    assert "30 days" in hits[0].chunk.text


def transaction_state() -> tuple[bool, str]:
    """Whether this thread's connection is inside a transaction: Django's view, and the
    server's (PostgreSQL: psycopg's transaction status; "idle" is none open)."""
    in_atomic = connection.in_atomic_block
    if connection.vendor != "postgresql" or connection.connection is None:
        return in_atomic, "idle"
    return in_atomic, connection.connection.info.transaction_status.name.lower()


@pytest.mark.django_db(transaction=True)
def test_no_transaction_is_open_while_the_query_is_embedded(world, openai_embeddings, monkeypatch):
    # The embedding is a network call, possibly slow: a transaction open meanwhile would keep
    # its connection "idle in transaction" (on PostgreSQL, with the tenant's SET LOCAL) for it.
    entitle(world.a.tenant)
    kb = make_kb(world.a, backend=Backend.HYBRID)
    for name, text in DOCS.items():
        assert ingest(world.a, kb, name, text).status == "ready"
    openai = hybrid._openai
    states = []

    def embedding_call(texts):
        states.append(transaction_state())
        return openai(texts)

    monkeypatch.setattr(hybrid, "_openai", embedding_call)
    with tenant_context(world.a.tenant):
        hits = retrieval.search("reimbursement", [kb], k=1)
    assert states == [(False, "idle")]
    # And the reads stayed the tenant's: the answer comes from its own chunks, through the vector.
    assert "30 days" in hits[0].chunk.text
    assert {hit.chunk.tenant_id for hit in hits} == {world.a.tenant.pk}


def test_titan_embeddings_through_boto3(world, settings, monkeypatch):
    settings.KNOWLEDGE_EMBEDDINGS = "bedrock"
    settings.KNOWLEDGE_EMBEDDINGS_MODEL = "amazon.titan-embed-text-v2:0"
    client = boto3.client("bedrock-runtime", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    monkeypatch.setattr(hybrid, "bedrock_client", lambda: client)
    with Stubber(client) as stubber:
        for text in ("first", "second"):
            payload = json.dumps({"embedding": fake_vector(text), "inputTextTokenCount": 1}).encode()
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
        vectors = hybrid.embed(["first", "second"])
        stubber.assert_no_pending_responses()
    assert len(vectors) == 2 and all(abs(sum(x * x for x in v) - 1.0) < 1e-6 for v in vectors)

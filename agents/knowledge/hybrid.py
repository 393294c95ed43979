"""The `hybrid` backend: lexical ranking fused with embedding similarity.

Embeddings come from an OpenAI-compatible ``/embeddings`` endpoint
(``KNOWLEDGE_EMBEDDINGS=openai``, ``KNOWLEDGE_EMBEDDINGS_URL``) or Amazon Titan
through boto3 (``KNOWLEDGE_EMBEDDINGS=bedrock``). Vectors are stored per chunk
(normalised float32). At query time the candidates are the tenant's own chunks
of the chosen knowledge bases — the filter is in the query that loads them,
before anything is ranked — and the two rankings are fused by reciprocal rank.

If the embedding service fails at query time the lexical ranking is returned
alone (an answer with keyword search beats no answer); at ingestion time the
document fails with the reason, so nothing is half-indexed.

The service is paid per token, so every call's tokens are metered to the tenant
(billing.metering.record_embedding): the count the service reports
(OpenAI-compatible ``usage.prompt_tokens``, else ``usage.total_tokens``; Titan's
``inputTextTokenCount``), or, when an answer carries none, the estimate the
offline chat model uses (``ceil(characters / 4)`` per text,
agents.runtime.models.base), marked as estimated.
"""

from __future__ import annotations

import json
import logging
import math
import urllib.error
import urllib.request
from array import array
from dataclasses import dataclass

from django.conf import settings

from agents.knowledge.models import Chunk
from agents.knowledge.retrieval import local_ranking, reciprocal_rank_fusion

log = logging.getLogger(__name__)

BATCH = 64
TIMEOUT_SECONDS = 30
MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class EmbeddingError(Exception):
    pass


@dataclass(frozen=True)
class Usage:
    """The tokens one embedding call (or several, added) was paid for."""

    model_key: str
    tokens: int
    estimated: bool

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.model_key, self.tokens + other.tokens, self.estimated or other.estimated)


@dataclass(frozen=True)
class Embedded:
    vectors: list[list[float]]
    usage: Usage


def _estimated(texts: list[str]) -> int:
    from agents.runtime.models import estimate_tokens

    return sum(estimate_tokens(text) for text in texts)


def _reported_tokens(document: dict) -> int | None:
    """An OpenAI-compatible answer's token count: `usage.prompt_tokens` (what an embedding
    is billed on), else `usage.total_tokens`; None when it has neither."""
    usage = document.get("usage") if isinstance(document, dict) else None
    if not isinstance(usage, dict):
        return None
    for name in ("prompt_tokens", "total_tokens"):
        value = usage.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def _normalise(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


def _openai(texts: list[str]) -> tuple[list[list[float]], Usage]:
    url = settings.KNOWLEDGE_EMBEDDINGS_URL.rstrip("/") + "/embeddings"
    if not url.startswith(("http://", "https://")):
        raise EmbeddingError("KNOWLEDGE_EMBEDDINGS_URL must be an http(s) URL")
    body = json.dumps({"model": settings.KNOWLEDGE_EMBEDDINGS_MODEL, "input": texts}).encode()
    headers = {"Content-Type": "application/json"}
    api_key = getattr(settings, "OPENAI_API_KEY", "") or ""
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 (scheme checked)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
            document = json.loads(response.read(MAX_RESPONSE_BYTES))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise EmbeddingError(str(exc)) from exc
    try:
        rows = sorted(document["data"], key=lambda row: row.get("index", 0))
        vectors = [[float(x) for x in row["embedding"]] for row in rows]
    except (KeyError, TypeError, ValueError) as exc:
        raise EmbeddingError(f"unexpected /embeddings answer: {exc}") from exc
    if len(vectors) != len(texts):
        raise EmbeddingError("the /embeddings answer has the wrong number of vectors")
    model_key = settings.KNOWLEDGE_EMBEDDINGS_MODEL
    tokens = _reported_tokens(document)
    if tokens is None:
        return vectors, Usage(model_key, _estimated(texts), estimated=True)
    return vectors, Usage(model_key, tokens, estimated=False)


def bedrock_client():
    """Signed as the role of the tenant in context where it has one (tenants.aws), else
    with the portal's own credentials."""
    import boto3

    from tenants import aws
    from tenants.context import current_tenant

    own = aws.client(current_tenant(), "bedrock-runtime", region_name=settings.AWS_REGION)
    return own or boto3.client("bedrock-runtime", region_name=settings.AWS_REGION)


def _bedrock(texts: list[str]) -> tuple[list[list[float]], Usage]:
    from botocore.exceptions import BotoCoreError, ClientError

    client = bedrock_client()
    model_key = settings.KNOWLEDGE_EMBEDDINGS_MODEL
    vectors = []
    usage = Usage(model_key, 0, estimated=False)
    for text in texts:
        sent = text[:40_000]
        try:
            response = client.invoke_model(
                modelId=model_key,
                body=json.dumps({"inputText": sent}),
                contentType="application/json",
                accept="application/json",
            )
            answer = json.loads(response["body"].read())
            vectors.append([float(x) for x in answer["embedding"]])
        except (BotoCoreError, ClientError, KeyError, TypeError, ValueError) as exc:
            raise EmbeddingError(str(exc)) from exc
        count = answer.get("inputTextTokenCount")
        if isinstance(count, int) and not isinstance(count, bool) and count >= 0:
            usage += Usage(model_key, count, estimated=False)
        else:
            usage += Usage(model_key, _estimated([sent]), estimated=True)
    return vectors, usage


def embed(texts: list[str]) -> list[list[float]]:
    return embedded(texts).vectors


def embedded(texts: list[str]) -> Embedded:
    """The normalised vectors of `texts` and the tokens the service was paid for."""
    provider = settings.KNOWLEDGE_EMBEDDINGS
    if provider == "openai":
        fn = _openai
    elif provider == "bedrock":
        fn = _bedrock
    else:
        raise EmbeddingError("no embedding provider is configured (KNOWLEDGE_EMBEDDINGS=openai|bedrock)")
    vectors: list[list[float]] = []
    usage = Usage(settings.KNOWLEDGE_EMBEDDINGS_MODEL, 0, estimated=False)
    for start in range(0, len(texts), BATCH):
        batch, batch_usage = fn(texts[start : start + BATCH])
        vectors.extend(_normalise(v) for v in batch)
        usage += batch_usage
    return Embedded(vectors, usage)


def pack(vector: list[float]) -> bytes:
    return array("f", vector).tobytes()


def unpack(blob: bytes) -> array:
    values = array("f")
    values.frombytes(bytes(blob))
    return values


def embed_chunks(chunks: list[Chunk]) -> Usage:
    """Store each chunk's vector on it; the tokens the service was paid for."""
    result = embedded([f"{c.title}\n{c.text}" for c in chunks])
    for chunk, vector in zip(chunks, result.vectors, strict=True):
        chunk.embedding = pack(vector)
    return result.usage


def vector_ranking(tenant_id: int, kb_ids: list[int], query_vector: list[float], limit: int) -> list[tuple[int, float]]:
    rows = Chunk.objects.filter(tenant_id=tenant_id, knowledge_base_id__in=kb_ids, embedding__isnull=False)
    scored = []
    for chunk_id, blob in rows.values_list("id", "embedding").iterator(chunk_size=2000):
        vector = unpack(blob)
        if len(vector) == len(query_vector):
            scored.append((chunk_id, sum(a * b for a, b in zip(vector, query_vector, strict=True))))
    scored.sort(key=lambda item: (-item[1], item[0]))
    return scored[:limit]


def query_vector(query: str) -> Embedded | None:
    """The question's embedding (`vectors[0]`) and its usage, or None when the embedding
    service fails (the search then ranks by words alone). An HTTP call, possibly slow:
    retrieval.search asks it before it opens its transaction, never inside one."""
    try:
        return embedded([query])
    except EmbeddingError as exc:
        log.warning("hybrid search fell back to full-text only: %s", exc)
        return None


def ranking(
    tenant, kb_ids: list[int], query: str, limit: int, *, vector: list[float] | None
) -> list[tuple[int, float]]:
    """The lexical ranking fused with the similarity to `vector` (query_vector(query)); by
    words alone when there is none."""
    depth = max(limit * 4, 40)
    lexical = local_ranking(tenant.pk, kb_ids, query, depth)
    if vector is None:
        return lexical[:limit]
    semantic = vector_ranking(tenant.pk, kb_ids, vector, depth)
    return reciprocal_rank_fusion([lexical, semantic])[:limit]

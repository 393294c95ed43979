"""One retriever interface, backends per knowledge base.

`search(tenant, query, knowledge_base_ids, k)` answers ranked `Hit`s (chunk,
score) for one tenant. Whatever the backend, the tenant and the knowledge
bases are part of the search itself — never a filter applied to someone's
top-k afterwards, which could return fewer (or, with a bug, foreign) results:

* `local` on SQLite: FTS5 `MATCH 'k<kb…> AND (t<tenant>z<term> OR …)'` ranked by bm25 —
  the index terms carry the tenant (fts.py), so only the tenant's postings match;
* `local` on PostgreSQL: `WHERE tenant_id = … AND knowledge_base_id = ANY(…) AND
  search_vector @@ query` (GIN-indexed tsvector) ranked by BM25 computed from the
  tsvectors in the same statement (ts_rank_cd breaks ties; see POSTGRES_BM25 for
  why); row-level security adds the tenant predicate once more;
* `hybrid`: the local ranking fused with embedding similarity over the tenant's
  own chunks (reciprocal rank fusion), see agents/knowledge/hybrid.py;
* `bedrock`: Amazon Bedrock Knowledge Bases with a tenant_id metadata filter
  (pooled) or the tenant's own knowledge base id (silo), see bedrock.py.

Scores are "higher is better" within one query; they are not comparable across
backends, which is why results of several backends are fused by rank.
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.core.exceptions import ImproperlyConfigured
from django.db import connection, transaction

from agents.knowledge import fts
from agents.knowledge.models import Backend, Chunk, KnowledgeBase
from tenants.context import require_tenant

log = logging.getLogger(__name__)

MAX_K = 50
MAX_QUERY_CHARS = 2000
MAX_TERMS = 32
RRF_K = 60  # the constant of reciprocal rank fusion (Cormack et al. 2009)

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most my
    myself no nor not now of off on once only or other our ours ourselves out over own same she should so
    some such than that the their theirs them themselves then there these they this those through to too
    under until up very was we were what when where which while who whom why will with would you your
    yours yourself yourselves""".split()  # noqa: SIM905 (a word list reads better as prose)
)
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    score: float


def query_terms(query: str) -> list[str]:
    """Distinct search words of `query`, without stopwords, at most MAX_TERMS."""
    terms: list[str] = []
    for word in _WORD.findall(query[:MAX_QUERY_CHARS].lower()):
        word = word.strip("_")
        if len(word) < 2 or word in STOPWORDS or word in terms:
            continue
        terms.append(word)
        if len(terms) == MAX_TERMS:
            break
    return terms


# --- local: the database's own full-text search ---------------------------------------------------


def _sqlite_match(tenant_id: int, kb_ids: list[int], terms: list[str]) -> str:
    # The words are the tenant's own index terms (agents/knowledge/fts.py): the tenant
    # filter is the vocabulary itself. Every value is an integer or a run of letters and
    # digits inside double quotes: nothing a user types can change the expression.
    kbs = " OR ".join(f"k{int(kb)}" for kb in kb_ids)
    words = " OR ".join(f'"{w}"' for w in fts.query_words(tenant_id, terms))
    return f"kb_key : ({kbs}) AND {{title text}} : ({words})"


# PostgreSQL: one statement whose every CTE starts from the tenant's rows of the chosen
# bases ("scope"), so the statistics (document count, average length, document
# frequencies) are the tenant's own and nothing of another tenant is ever ranked.
# The matches (GIN-indexed @@) are ranked by BM25 (k1 = 1.2, b = 0.75) computed from their
# tsvectors; ts_rank_cd breaks ties. ts_rank_cd alone has no inverse document frequency:
# on the evaluation set (make bench) it put the answering passage in the top 5 for 60 %
# of the questions, BM25 for over 90 %. Row-level security applies to every read of
# knowledge_chunk here as well.
POSTGRES_BM25 = """
WITH query AS MATERIALIZED (
    SELECT to_tsquery('english', %(tsquery)s) AS q,
           ARRAY(SELECT DISTINCT lexeme FROM unnest(to_tsvector('english', %(words)s))) AS lexemes
),
scope AS MATERIALIZED (
    SELECT c.id, c.search_vector FROM knowledge_chunk c
    WHERE c.tenant_id = %(tenant)s AND c.knowledge_base_id = ANY(%(kbs)s)
),
stats AS MATERIALIZED (
    SELECT count(*)::float8 AS n, greatest(avg(length(search_vector)), 1)::float8 AS avgdl FROM scope
),
terms AS MATERIALIZED (
    SELECT s.id, length(s.search_vector)::float8 AS dl, u.lexeme,
           coalesce(array_length(u.positions, 1), 1)::float8 AS tf
    FROM scope s CROSS JOIN query
    -- only the query's lexemes of each match: marked with weight A, the rest filtered out
    CROSS JOIN LATERAL unnest(ts_filter(setweight(setweight(s.search_vector, 'D'), 'A', query.lexemes), '{a}')) u
    WHERE s.search_vector @@ query.q
),
df AS MATERIALIZED (SELECT lexeme, count(*)::float8 AS df FROM terms GROUP BY lexeme),
ranked AS MATERIALIZED (
    SELECT t.id,
           sum(ln(1 + (stats.n - df.df + 0.5) / (df.df + 0.5))
               * t.tf * 2.2 / (t.tf + 1.2 * (0.25 + 0.75 * t.dl / stats.avgdl))) AS score
    FROM terms t JOIN df USING (lexeme) CROSS JOIN stats
    GROUP BY t.id
    ORDER BY score DESC, t.id
    LIMIT %(depth)s
)
SELECT r.id, r.score
FROM ranked r JOIN knowledge_chunk c ON c.id = r.id AND c.tenant_id = %(tenant)s CROSS JOIN query
ORDER BY r.score DESC, ts_rank_cd(c.search_vector, query.q, 1) DESC, r.id
LIMIT %(limit)s
"""


def local_ranking(tenant_id: int, kb_ids: list[int], query: str, limit: int) -> list[tuple[int, float]]:
    """(chunk id, score) best first, from the tenant's chunks in `kb_ids` only."""
    terms = query_terms(query)
    if not terms or not kb_ids:
        return []
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(
                "SELECT c.id, -bm25(knowledge_chunk_fts, 2.0, 1.0, 0.0) AS score"
                " FROM knowledge_chunk_fts JOIN knowledge_chunk c ON c.id = knowledge_chunk_fts.rowid"
                " WHERE knowledge_chunk_fts MATCH %s AND c.tenant_id = %s"
                " ORDER BY score DESC, c.id LIMIT %s",
                [_sqlite_match(tenant_id, kb_ids, terms), tenant_id, limit],
            )
        elif connection.vendor == "postgresql":
            cursor.execute(
                POSTGRES_BM25,
                {
                    "tsquery": " | ".join(f"'{t}'" for t in terms),
                    "words": " ".join(terms),
                    "tenant": tenant_id,
                    "kbs": list(kb_ids),
                    "limit": limit,
                    "depth": limit * 2,
                },
            )
        else:  # pragma: no cover - settings accept SQLite and PostgreSQL only
            raise ImproperlyConfigured(f"Knowledge search runs on SQLite or PostgreSQL, not {connection.vendor}.")
        return [(int(row[0]), float(row[1])) for row in cursor.fetchall()]


# --- fusion and the public interface -------------------------------------------------------------


def reciprocal_rank_fusion(rankings: Iterable[list[tuple[int, float]]], k: int = RRF_K) -> list[tuple[int, float]]:
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, (chunk_id, _) in enumerate(ranking, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))


def ranking_for(
    tenant, backend: str, kb_ids: list[int], query: str, limit: int, *, vector: list[float] | None = None
) -> list[tuple[int, float]]:
    """`vector`: the query's embedding, for a hybrid base (hybrid.query_vector)."""
    if backend == Backend.HYBRID:
        from agents.knowledge import hybrid

        return hybrid.ranking(tenant, kb_ids, query, limit, vector=vector)
    from agents.knowledge import bedrock

    if bedrock.serves(backend):
        return bedrock.ranking(tenant, kb_ids, query, limit)
    # A `bedrock` base on embedded defaults is searched in its local chunks (bedrock.serves).
    return local_ranking(tenant.pk, kb_ids, query, limit)


@dataclass(frozen=True)
class Meter:
    """Whom a hybrid search's query embedding is billed to (billing.metering.record_embedding).

    `turn`: for a search a turn's runtime asked for, the running turn (agents.runtime_gateway.
    turn_in_progress), or None when there is none: its invocation and the query key the event,
    so a turn run again bills its query once. Any other search (a search page, the API's test
    search) is an embedding of its own: a fresh key each time."""

    user_id: int | None = None
    agent_slug: str = ""
    turn: Callable[[], object | None] | None = None

    def key(self, query: str) -> uuid.UUID:
        from billing.metering import turn_embedding_key

        turn = self.turn() if self.turn is not None else None
        return turn_embedding_key(turn.pk, query) if turn is not None else uuid.uuid4()


def _meter_query(tenant, query: str, usage, meter: Meter) -> None:
    from billing.metering import record_embedding

    record_embedding(
        tenant.pk,
        key=meter.key(query),
        model_key=usage.model_key,
        tokens=usage.tokens,
        estimated=usage.estimated,
        user_id=meter.user_id,
        agent_slug=meter.agent_slug,
    )


@dataclass(frozen=True)
class Found:
    """A search's hits, and the names of the bases it could not reach: their backend (Bedrock)
    failed while the others answered, so the caller can say what the answer lacks."""

    hits: list[Hit]
    missed: list[str]


def search(
    query: str, knowledge_bases: Iterable[KnowledgeBase], k: int = 5, *, meter: Meter | None = None
) -> list[Hit]:
    """The `k` best chunks for `query` among the current tenant's `knowledge_bases`
    (search_reporting, for a caller that only wants the hits)."""
    return search_reporting(query, knowledge_bases, k, meter=meter).hits


def search_reporting(
    query: str, knowledge_bases: Iterable[KnowledgeBase], k: int = 5, *, meter: Meter | None = None
) -> Found:
    """The `k` best chunks for `query` among the current tenant's `knowledge_bases`, and the
    bases that could not be searched. A hybrid base's query embedding is metered to the
    tenant as `meter` says (by default: a search of its own, by no one in particular).

    Raises bedrock.BedrockUnavailable when the bases are all Bedrock's and Bedrock fails;
    when other bases are searched too, their hits answer alone and the Bedrock bases are
    named in `missed` (and the failure logged)."""
    from agents.knowledge import bedrock

    tenant = require_tenant()
    k = max(1, min(int(k), MAX_K))
    by_backend: dict[str, list[int]] = {}
    names: dict[str, list[str]] = {}
    for kb in knowledge_bases:
        if kb.tenant_id != tenant.pk:  # a caller bug, never a reason to widen the search
            raise ValueError("knowledge base of another tenant")
        # A `bedrock` base that Bedrock does not serve here (embedded defaults) is a local one.
        backend = kb.backend if kb.backend != Backend.BEDROCK or bedrock.in_use() else Backend.LOCAL
        by_backend.setdefault(backend, []).append(kb.pk)
        names.setdefault(backend, []).append(kb.name)
    # One transaction for the ranking and the fetch: on PostgreSQL each transaction costs a
    # BEGIN, the tenant's set_config and a COMMIT round trip (portal/db), a third of a query.
    # Not around a call to Bedrock, which would hold the transaction open over the network.
    # Nor on SQLite, where it saves nothing and is BEGIN IMMEDIATE (settings): the write
    # lock, which would keep every other writer (messages posted, turns finishing) waiting
    # for the whole ranking.
    # A hybrid base's query embedding is an HTTP call to the embedding provider: asked before
    # the transaction opens, or the connection would wait "idle in transaction" (holding its
    # snapshot and the tenant's settings) for the network. The tenant stays the context's.
    vector = None
    if Backend.HYBRID in by_backend:
        from agents.knowledge import hybrid

        embedded = hybrid.query_vector(query)
        if embedded is not None:
            vector = embedded.vectors[0]
            _meter_query(tenant, query, embedded.usage, meter or Meter())
    remote = Backend.BEDROCK in by_backend
    missed: list[str] = []
    with contextlib.nullcontext() if remote or connection.vendor != "postgresql" else transaction.atomic():
        rankings = []
        for backend, ids in sorted(by_backend.items()):
            try:
                rankings.append(ranking_for(tenant, backend, ids, query, k, vector=vector))
            except bedrock.BedrockUnavailable as exc:
                if len(by_backend) == 1:
                    raise
                # The other backends' passages still answer (as hybrid falls back to words):
                # an agent reading several bases answers from those rather than from none,
                # and says which it could not read (`missed`, the gateway's `unsearched`).
                missed.extend(sorted(names[backend]))
                log.warning("search for tenant %s without its Bedrock bases (%s): %s", tenant.pk, exc.code, exc.text)
        ranked = rankings[0] if len(rankings) == 1 else reciprocal_rank_fusion(rankings)[:k]
        ranked = ranked[:k]
        chunks = Chunk.objects.select_related("document").in_bulk([chunk_id for chunk_id, _ in ranked])
    # in_bulk goes through the tenant-scoped manager: an id of another tenant would simply be missing.
    hits = [Hit(chunk=chunks[chunk_id], score=score) for chunk_id, score in ranked if chunk_id in chunks]
    return Found(hits=hits, missed=missed)

"""The local retriever: ranked results from the right tenant and knowledge bases only."""

from __future__ import annotations

import re

import pytest

from agents.knowledge import retrieval
from agents.knowledge.models import Chunk
from tenants.context import tenant_context
from tests.knowledge.helpers import entitle, ingest, make_kb

REFUNDS = """# Refunds

Customers may ask for a refund within 30 days of purchase. Refunds are paid to the original card.

# Shipping

Parcels leave the warehouse within two working days. Express delivery costs extra.
"""


@pytest.fixture
def kbs(world):
    entitle(world.a.tenant, world.b.tenant)
    kb_a = make_kb(world.a)
    kb_b = make_kb(world.b)
    ingest(world.a, kb_a, "policy.md", REFUNDS)
    ingest(world.b, kb_b, "policy.md", REFUNDS.replace("30 days", "45 days"))
    return kb_a, kb_b


def test_it_ranks_the_passage_that_answers_first(world, kbs):
    kb_a, _ = kbs
    with tenant_context(world.a.tenant):
        hits = retrieval.search("How many days do I have to get a refund?", [kb_a], k=5)
    assert hits[0].chunk.metadata["heading"] == "Refunds"
    assert "30 days" in hits[0].chunk.text
    assert hits[0].score > 0


def test_it_never_returns_another_tenants_chunks_at_any_k(world, kbs):
    kb_a, kb_b = kbs
    for k in (1, 2, 5, 50):
        with tenant_context(world.a.tenant):
            hits = retrieval.search("refund days shipping parcels warehouse express", [kb_a], k=k)
        assert hits
        assert {h.chunk.tenant_id for h in hits} == {world.a.tenant.pk}
        assert all("45 days" not in h.chunk.text for h in hits)


def test_it_refuses_a_knowledge_base_of_another_tenant(world, kbs):
    _, kb_b = kbs
    with tenant_context(world.a.tenant), pytest.raises(ValueError):
        retrieval.search("refund", [kb_b])


def test_it_searches_only_the_chosen_knowledge_bases(world, kbs):
    kb_a, _ = kbs
    other = make_kb(world.a, name="Other")
    ingest(world.a, other, "other.txt", "Refund rules for gift cards: no refunds on gift cards.")
    with tenant_context(world.a.tenant):
        hits = retrieval.search("refund gift cards", [other], k=10)
    assert hits and {h.chunk.knowledge_base_id for h in hits} == {other.pk}


def test_it_finds_nothing_for_stopwords_only(world, kbs):
    kb_a, _ = kbs
    with tenant_context(world.a.tenant):
        assert retrieval.search("the and of", [kb_a]) == []


def test_deleting_chunks_removes_their_index_entries(world, kbs):
    kb_a, _ = kbs
    with tenant_context(world.a.tenant):
        Chunk.objects.filter(knowledge_base=kb_a).delete()
        assert retrieval.local_ranking(world.a.tenant.pk, [kb_a.pk], "refund", 10) == []


def test_sqlite_index_terms_carry_their_tenant(world, kbs):
    from django.db import connection

    from agents.knowledge import fts

    assert fts.tenant_terms(7, "Refunds within 30 days") == "t7zRefunds t7zwithin t7z30 t7zdays"
    if connection.vendor != "sqlite":
        pytest.skip("the FTS5 table exists on SQLite only; PostgreSQL filters by tenant_id in the ranking query")
    kb_a, kb_b = kbs
    with connection.cursor() as cursor:
        cursor.execute("SELECT c.tenant_id, f.text FROM knowledge_chunk_fts f JOIN knowledge_chunk c ON c.id = f.rowid")
        rows = cursor.fetchall()
        assert rows
        for tenant_id, text in rows:
            assert set(re.findall(r"t\d+z", text)) == {f"t{tenant_id}z"}
        # Even without the join's tenant filter, A's words cannot match B's postings.
        cursor.execute(
            "SELECT rowid FROM knowledge_chunk_fts WHERE knowledge_chunk_fts MATCH %s",
            [f'"{fts.prefix(world.a.tenant.pk)}refund" OR "{fts.prefix(world.a.tenant.pk)}45"'],
        )
        matched = {row[0] for row in cursor.fetchall()}
    with tenant_context(world.a.tenant):
        assert matched and matched <= set(Chunk.objects.values_list("id", flat=True))

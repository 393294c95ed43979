"""Other tenants' names in a tenant's own documents are found at ingestion, not on the turn.

The cross-tenant check lets an answer name another customer when the tenant's own
documents hold that name (agents.guardrails.services.TenantSupplied). Ingestion stores
with each document which other tenants' markers its text holds and the fingerprint of the
markers it looked for; a turn reads only those lists, in one small query, never the
documents' text. When the set of tenants changes, a background task looks again in the
documents whose fingerprint is stale, one tenant at a time and in that tenant's context.
"""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents.guardrails import enforce, services
from agents.knowledge import services as knowledge
from agents.knowledge import tasks
from agents.knowledge.models import Document
from agents.models import Invocation
from tenants.context import tenant_context
from tenants.models import Tenant
from tests import factories
from tests.agents.helpers import make_turn
from tests.knowledge.helpers import entitle, ingest, make_kb

pytestmark = pytest.mark.django_db

NEWCOMER = "Delta Works"


def guarded_turn(world, catalogue, answer: str) -> tuple[bool, list[str]]:
    """Whether the output guard blocks `answer` in a new turn of alpha's, and the SQL it ran."""
    _conversation, _answer, queued = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk, "Who?")
    with tenant_context(world.a.tenant):
        invocation = Invocation.objects.select_related("agent", "user_message").get(pk=queued.pk)
        guard = enforce.OutputGuard(world.a.tenant, invocation)
        services.other_tenant_markers(guard.effective.tenants_gen)  # as any turn: out of the count
        with CaptureQueriesContext(connection) as queries:
            verdicts = [guard.check(answer), guard.final(answer)]
    blocked = any(verdict is not None and verdict.blocked for verdict in verdicts)
    return blocked, [query["sql"] for query in queries.captured_queries]


def stored(document: Document) -> tuple[list[str], str]:
    with tenant_context(document.tenant):
        document.refresh_from_db()
    return document.other_tenant_markers, document.markers_fingerprint


def test_ingestion_stores_the_other_tenants_markers_the_document_holds_in_any_spelling(world):
    entitle(world.a.tenant)
    document = ingest(
        world.a, make_kb(world.a), "partners.md", "# Partners\n\nIn Spain: B.R.A.V.O inc.\nIn Chile: nobody."
    )

    markers, fingerprint = stored(document)

    # "Bravo Inc" is bravo's name and "bravo" its slug; spelled with dots, both are there.
    assert markers == ["bravo", "bravo inc"]
    assert fingerprint == services.build_other_tenant_markers().fingerprint


def test_a_document_naming_no_other_tenant_stores_an_empty_list_with_the_fingerprint(world):
    entitle(world.a.tenant)
    document = ingest(world.a, make_kb(world.a), "refunds.md", "# Refunds\n\nThirty days from delivery.")

    assert stored(document) == ([], services.build_other_tenant_markers().fingerprint)


def test_a_turn_exempts_a_name_in_the_tenants_documents_without_reading_their_text(world, catalogue):
    entitle(world.a.tenant)
    ingest(world.a, make_kb(world.a), "partners.md", "# Partners\n\nOur reseller in Spain is Bravo Inc.")

    blocked, queries = guarded_turn(world, catalogue, "Our reseller in Spain is Bravo Inc.")

    assert not blocked
    # The first turn after the upload too: no chunk is read, the documents once.
    assert not [sql for sql in queries if "knowledge_chunk" in sql]
    assert len([sql for sql in queries if "knowledge_document" in sql]) == 1


def test_a_turn_reads_the_same_whatever_the_answer_names(world, catalogue):
    entitle(world.a.tenant)
    ingest(world.a, make_kb(world.a), "partners.md", "# Partners\n\nIn Spain: Bravo Inc. In Chile: Zulu Widgets.")

    guarded_turn(world, catalogue, "Nobody yet.")  # the connection's first turn sets its context (PostgreSQL)
    named = guarded_turn(world, catalogue, "In Spain: Bravo Inc.")
    plain = guarded_turn(world, catalogue, "In Chile: Zulu Widgets.")

    def statements(queries):
        return [re.sub(r"\d+|'[^']*'", "?", sql) for sql in queries]

    assert (named[0], plain[0]) == (False, False)
    assert statements(named[1]) == statements(plain[1])


def test_another_tenants_documents_do_not_exempt_a_name_in_this_tenants_answers(world, catalogue):
    entitle(world.a.tenant, world.b.tenant)
    ingest(world.b, make_kb(world.b), "about.md", "# About\n\nBravo Inc sells widgets.")

    assert guarded_turn(world, catalogue, "Bravo Inc sells widgets.")[0]


def test_a_new_tenant_makes_documents_stale_and_the_rescan_after_its_onboarding_finds_its_name(
    world, catalogue, eager, django_capture_on_commit_callbacks
):
    entitle(world.a.tenant)
    kb = make_kb(world.a)
    document = ingest(world.a, kb, "partners.md", f"# Partners\n\nOur reseller in Spain is {NEWCOMER}.")
    assert stored(document)[0] == []  # nobody of that name is a customer yet

    with django_capture_on_commit_callbacks(execute=True):
        factories.make_tenant("delta-works", name=NEWCOMER)  # onboarding: the rescan runs after commit

    markers, fingerprint = stored(document)
    assert markers == ["delta works", "delta-works"]
    assert fingerprint == services.build_other_tenant_markers().fingerprint
    assert not guarded_turn(world, catalogue, f"Our reseller in Spain is {NEWCOMER}.")[0]


def test_until_its_rescan_a_stale_document_over_blocks_and_never_leaks(world, catalogue):
    entitle(world.a.tenant)
    document = ingest(
        world.a, make_kb(world.a), "partners.md", f"# Partners\n\nIn Spain: Bravo Inc. In Chile: {NEWCOMER}."
    )
    factories.make_tenant("delta-works", name=NEWCOMER)  # the rescan's task is never run here

    assert stored(document)[1] != services.build_other_tenant_markers().fingerprint
    # What the document listed still counts (it holds it); the newcomer's name is blocked.
    assert not guarded_turn(world, catalogue, "In Spain: Bravo Inc.")[0]
    assert guarded_turn(world, catalogue, f"In Chile: {NEWCOMER}.")[0]

    tasks.rescan_document_markers(world.a.tenant.pk)

    assert stored(document)[0] == ["bravo", "bravo inc", "delta works", "delta-works"]
    assert not guarded_turn(world, catalogue, f"In Chile: {NEWCOMER}.")[0]


def test_the_rescan_goes_in_batches_each_a_task_of_its_own(world, eager, monkeypatch):
    entitle(world.a.tenant)
    kb = make_kb(world.a)
    documents = [ingest(world.a, kb, f"doc-{n}.md", f"# Doc {n}\n\nSold by {NEWCOMER}.") for n in range(3)]
    factories.make_tenant("delta-works", name=NEWCOMER)
    monkeypatch.setattr(knowledge, "RESCAN_BATCH", 1)
    batches = []
    rescan = knowledge.rescan_document_markers

    def counted(tenant, batch=None):
        batches.append(rescan(tenant, batch))
        return batches[-1]

    monkeypatch.setattr(knowledge, "rescan_document_markers", counted)

    tasks.rescan_document_markers(world.a.tenant.pk)

    assert batches == [(1, True), (1, True), (1, False)]
    assert [stored(document)[0] for document in documents] == [["delta works", "delta-works"]] * 3


def test_the_rescan_of_one_tenant_never_reads_another_tenants_documents(world):
    entitle(world.a.tenant, world.b.tenant)
    mine = ingest(world.a, make_kb(world.a), "partners.md", f"# Partners\n\nSold by {NEWCOMER}.")
    theirs = ingest(world.b, make_kb(world.b), "partners.md", f"# Partners\n\nSold by {NEWCOMER} too.")
    factories.make_tenant("delta-works", name=NEWCOMER)
    assert knowledge.stale_marker_tenants() == sorted([world.a.tenant.pk, world.b.tenant.pk])

    with CaptureQueriesContext(connection) as queries:
        tasks.rescan_document_markers(world.a.tenant.pk)

    assert stored(mine)[0] == ["delta works", "delta-works"]
    stale_fingerprint = stored(theirs)[1]
    assert stored(theirs) == ([], stale_fingerprint) and stale_fingerprint != stored(mine)[1]
    assert knowledge.stale_marker_tenants() == [world.b.tenant.pk]
    # Every statement over documents or chunks is held to alpha (by its tenant-scoped
    # managers; on PostgreSQL row-level security holds it there too).
    # (a column of one of its tables, "knowledge_…"."…": not the tier's knowledge_storage_mb)
    knowledge_sql = [sql for sql in queries.captured_queries if re.search(r'"knowledge_\w+"\.', sql["sql"])]
    assert knowledge_sql
    for query in knowledge_sql:
        assert re.search(rf'"tenant_id" = {world.a.tenant.pk}\b', query["sql"]), query["sql"]
        assert not re.search(rf'"tenant_id" = {world.b.tenant.pk}\b', query["sql"]), query["sql"]


def test_a_tenant_onboarded_while_a_document_is_ingested_is_looked_for_after_it(
    world, eager, monkeypatch, django_capture_on_commit_callbacks
):
    # The change's own rescan can run before the ingestion stores what it found with the
    # older set of tenants; the ingestion sees the generation move and starts one itself.
    from agents.guardrails import services as guardrails

    build = guardrails.build_other_tenant_markers
    onboarded = []

    def onboarding_meanwhile():
        matcher = build()
        if not onboarded:  # the ingestion's matcher is built: a tenant arrives, and its rescan runs
            onboarded.extend(Tenant.objects.bulk_create([Tenant(slug="delta-works", name=NEWCOMER, tier=tier)]))
            guardrails.invalidate_tenants_list()  # what the signals do; their rescan is the next line
            tasks.rescan_stale_document_markers()
        return matcher

    tier = world.a.tenant.tier
    entitle(world.a.tenant)
    kb = make_kb(world.a)
    monkeypatch.setattr(guardrails, "build_other_tenant_markers", onboarding_meanwhile)
    with django_capture_on_commit_callbacks(execute=True):
        document = ingest(world.a, kb, "partners.md", f"# Partners\n\nSold by {NEWCOMER}.")

    assert onboarded
    assert stored(document) == (["delta works", "delta-works"], build().fingerprint)

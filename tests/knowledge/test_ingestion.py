"""Upload → parse → chunk → index: versions, no-ops, failures that touch nothing else, deletion."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from agents.knowledge import retrieval, services
from agents.knowledge.models import Chunk, Document, KnowledgeBase
from tenants.context import tenant_context
from tenants.models import AuditLog
from tenants.services import ServiceError
from tests.knowledge import files
from tests.knowledge.helpers import actor_for, entitle, ingest, make_kb, upload


@pytest.fixture
def kb(world):
    entitle(world.a.tenant, world.b.tenant)
    return make_kb(world.a)


def chunks_of(side, document):
    with tenant_context(side.tenant):
        return list(Chunk.objects.filter(document=document).order_by("position"))


def index_entries() -> int:
    """Rows of SQLite's FTS5 table (PostgreSQL's index is a column of the chunk row itself)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM knowledge_chunk_fts")
        return cursor.fetchone()[0]


@pytest.mark.parametrize(
    "filename, data",
    [
        ("notes.txt", b"Refunds are paid within 30 days."),
        ("notes.md", b"# Refunds\n\nRefunds are paid within 30 days."),
        ("notes.html", b"<h1>Refunds</h1><p>Refunds are paid within 30 days.</p>"),
        ("notes.csv", b"topic,rule\nRefunds,paid within 30 days\n"),
        ("notes.pdf", files.pdf("Refunds are paid within 30 days.")),
        ("notes.docx", files.docx([("Heading1", "Refunds"), ("", "Refunds are paid within 30 days.")])),
    ],
)
def test_it_ingests_every_supported_format_into_searchable_chunks(world, kb, filename, data):
    document = ingest(world.a, kb, filename, data)
    assert (document.status, document.error, document.chunk_count) == ("ready", "", 1)
    assert document.indexed_at is not None
    with tenant_context(world.a.tenant):
        [hit] = retrieval.search("refunds paid days", [kb])
    assert "30 days" in hit.chunk.text
    assert hit.chunk.document_id == document.pk


@pytest.mark.parametrize(
    "filename, data",
    [
        ("late.txt", ("Refunds are paid within 30 days. " * 300 + "Thirty\x00 days.").encode()),
        ("wide.txt", "Refunds are paid\x00 within 30 days.".encode("utf-16")),
        ("notes.md", ("# Refunds\n\n" + "Paid within 30 days. " * 500 + "\n\n# Ex\x00ceptions\n\nNone\x00.").encode()),
        ("rows.csv", ("topic,rule\n" + "Refunds,paid within 30 days\n" * 300 + "Re\x00funds,x\n").encode()),
    ],
)
def test_a_nul_character_past_the_binary_check_is_dropped_not_a_failed_document(world, kb, filename, data):
    # decode_text looks for NUL in the first 8 kB only; PostgreSQL cannot store one, so
    # these documents failed there with "an internal error; try again" (which never helps).
    document = ingest(world.a, kb, filename, data)
    assert (document.status, document.error) == ("ready", "")
    assert not any("\x00" in chunk.text + chunk.title + str(chunk.metadata) for chunk in chunks_of(world.a, document))


def test_it_uses_the_knowledge_bases_chunk_settings(world, kb):
    small = make_kb(world.a, name="Small", chunk_size=200, chunk_overlap=50)
    text = " ".join(f"Rule {n} says that item {n} ships in {n} days." for n in range(40))
    big_doc = ingest(world.a, kb, "rules.txt", text)
    small_doc = ingest(world.a, small, "rules.txt", text)
    assert small_doc.chunk_count > big_doc.chunk_count > 1
    assert all(len(c.text) <= 200 for c in chunks_of(world.a, small_doc))


def test_uploading_the_same_bytes_again_changes_nothing(world, kb):
    first = ingest(world.a, kb, "policy.txt", "Refunds within 30 days.")
    before = [c.pk for c in chunks_of(world.a, first)]
    again = upload(world.a, kb, "policy.txt", b"Refunds within 30 days.")
    renamed = upload(world.a, kb, "copy-of-policy.txt", b"Refunds within 30 days.")
    assert (again.outcome, renamed.outcome) == ("unchanged", "unchanged")
    with tenant_context(world.a.tenant):
        assert Document.objects.count() == 1
        assert Document.objects.get().version == 1
    assert [c.pk for c in chunks_of(world.a, first)] == before


def test_a_new_version_replaces_the_old_chunks(world, kb):
    first = ingest(world.a, kb, "policy.txt", "Refunds within 30 days.")
    old_ids = {c.pk for c in chunks_of(world.a, first)}
    second = ingest(world.a, kb, "policy.txt", "Refunds within 60 days. Exchanges within 90 days.")
    assert second.pk == first.pk
    assert (second.version, second.status) == (2, "ready")
    new = chunks_of(world.a, second)
    assert old_ids.isdisjoint({c.pk for c in new})
    assert "60 days" in " ".join(c.text for c in new)
    with tenant_context(world.a.tenant):
        hits = retrieval.search("refunds 30 days", [kb])
        assert hits and all("30 days" not in h.chunk.text for h in hits)
        assert Chunk.objects.count() == len(new)


def test_a_failed_new_version_keeps_the_old_chunks_and_touches_nothing_else(world, kb):
    good = ingest(world.a, kb, "policy.pdf", files.pdf("Refunds within 30 days."))
    other = ingest(world.a, kb, "other.txt", "Shipping takes two days.")
    before = {c.pk for c in chunks_of(world.a, good)} | {c.pk for c in chunks_of(world.a, other)}
    broken = ingest(world.a, kb, "policy.pdf", b"%PDF-1.4 this is not really a pdf at all")
    assert broken.status == "failed"
    assert "damaged" in broken.error
    with tenant_context(world.a.tenant):
        assert {c.pk for c in Chunk.objects.all()} == before
        assert Document.objects.get(pk=other.pk).status == "ready"


@pytest.mark.parametrize(
    "filename, data, reason",
    [
        ("scan.pdf", files.encrypted_pdf("secret"), "encrypted"),
        ("report.docx", files.docx_bomb(), "decompression bomb"),
        ("fake.txt", files.pdf("hello"), "content is a PDF"),
        ("odd.txt", bytes(range(128, 256)) * 40 + b"\x81\x8d\x8f\x90\x9d" * 50, "unknown encoding"),
    ],
)
def test_bad_content_fails_that_document_with_its_reason(world, kb, filename, data, reason):
    document = ingest(world.a, kb, filename, data)
    assert document.status == "failed"
    assert reason in document.error
    assert chunks_of(world.a, document) == []


def test_it_refuses_files_over_the_limit_empty_files_and_unknown_types_before_storing(world, kb, settings):
    settings.KNOWLEDGE_MAX_UPLOAD_BYTES = 2048
    for name, data, reason in (
        ("big.txt", b"x" * 2049, "larger than"),
        ("empty.txt", b"", "empty"),
        ("tool.exe", b"MZ....", "only .txt"),
    ):
        with pytest.raises(ServiceError) as refused:
            upload(world.a, kb, name, data)
        assert reason in " ".join(refused.value.messages)
    with tenant_context(world.a.tenant):
        assert Document.objects.count() == 0


def test_ingestion_runs_once_even_when_the_task_is_delivered_twice(world, kb):
    result = upload(world.a, kb, "policy.txt", b"Refunds within 30 days.")
    with tenant_context(world.a.tenant):
        assert services.ingest_document(world.a.tenant, result.document.pk, 1) == "ready"
        assert services.ingest_document(world.a.tenant, result.document.pk, 1) == "skipped"
        assert Chunk.objects.count() == 1


def test_an_older_task_does_not_overwrite_a_newer_version(world, kb):
    first = upload(world.a, kb, "policy.txt", b"Version one.")
    upload(world.a, kb, "policy.txt", b"Version two.")
    with tenant_context(world.a.tenant):
        assert services.ingest_document(world.a.tenant, first.document.pk, 1) == "skipped"
        assert services.ingest_document(world.a.tenant, first.document.pk, 2) == "ready"
        assert [c.text for c in Chunk.objects.all()] == ["Version two."]


def test_deleting_a_document_removes_its_chunks_index_entries_and_file(world, kb):
    document = ingest(world.a, kb, "policy.txt", "Refunds within 30 days.")
    keep = ingest(world.a, kb, "other.txt", "Shipping takes two days.")
    entries = index_entries() if connection.vendor == "sqlite" else 0
    with tenant_context(world.a.tenant), pytest.MonkeyPatch.context() as patch:
        patch.setattr("django.db.transaction.on_commit", lambda fn, *a, **k: fn())
        path = document.file.path
        services.delete_document(actor_for(world.a), document)
        assert Chunk.objects.filter(document_id=document.pk).count() == 0
        assert retrieval.search("refunds", [kb]) == []
        assert [h.chunk.document_id for h in retrieval.search("shipping", [kb])] == [keep.pk]
        assert AuditLog.objects.filter(action="knowledge.document_deleted").count() == 1
    import os

    assert not os.path.exists(path)
    if connection.vendor == "sqlite":
        assert index_entries() == entries - 1


def test_deleting_a_knowledge_base_removes_every_document_and_chunk(world, kb):
    ingest(world.a, kb, "a.txt", "Refunds within 30 days.")
    ingest(world.a, kb, "b.txt", "Shipping takes two days.")
    other = make_kb(world.b)
    ingest(world.b, other, "a.txt", "Refunds within 30 days.")
    with tenant_context(world.a.tenant):
        services.delete_knowledge_base(actor_for(world.a), kb)
        assert (KnowledgeBase.objects.count(), Document.objects.count(), Chunk.objects.count()) == (0, 0, 0)
    with tenant_context(world.b.tenant):
        assert Chunk.objects.count() == 1
    if connection.vendor == "sqlite":
        assert index_entries() == 1


def test_members_and_tenants_without_the_feature_may_not_manage(world, kb):
    with tenant_context(world.a.tenant), pytest.raises(Exception) as refused:
        services.create_knowledge_base(actor_for(world.a, "member"), name="Mine")
    assert "knowledge.manage" in str(refused.value)
    world.a.tenant.feature_grants = []
    world.a.tenant.save(update_fields=["feature_grants"])
    with tenant_context(world.a.tenant), pytest.raises(ServiceError, match="not part of"):
        services.upload_document(actor_for(world.a), kb, SimpleUploadedFile("a.txt", b"hello"))


def test_the_demo_seed_is_idempotent_and_gives_each_tenant_its_own_facts(db, settings):
    from django.core.management import call_command

    from agents.guardrails.services import canary_for
    from agents.knowledge.models import Chunk, Document
    from tenants.models import Tenant

    call_command("seed_demo", verbosity=0)
    call_command("seed_demo", verbosity=0)
    for slug, days in (("globex", "30 days"), ("initech", "60 days")):
        tenant = Tenant.objects.get(slug=slug)
        with tenant_context(tenant):
            assert Document.objects.filter(status="ready").count() == 3
            assert Document.objects.filter(version=1).count() == 3
            [top] = retrieval.search("How many days do I have to return a product?", KnowledgeBase.objects.all(), k=1)
            assert days in top.chunk.text
            assert Chunk.objects.exists()
            # Its canary is planted in its own documents, and only there.
            canary = canary_for(tenant)
            assert Chunk.objects.filter(text__contains=canary).exists()
        other = Tenant.objects.get(slug="initech" if slug == "globex" else "globex")
        with tenant_context(other):
            assert not Chunk.objects.filter(text__contains=canary).exists()

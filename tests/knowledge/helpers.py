"""Knowledge test data: entitled tenants, bases, and documents ingested synchronously.

`ingest()` uploads through the service (so checks and versioning are real) and
runs the ingestion task body at once, instead of waiting for the on_commit
enqueue that a test transaction never commits.
"""

from __future__ import annotations

from django.core.files.uploadedfile import SimpleUploadedFile

from agents.knowledge import services
from agents.knowledge.models import Document, KnowledgeBase
from tenants.context import tenant_context
from tenants.services import Actor


def entitle(*tenants) -> None:
    for tenant in tenants:
        tenant.feature_grants = sorted(set(tenant.feature_grants or []) | {"knowledge_bases"})
        tenant.save(update_fields=["feature_grants"])


def actor_for(side, role: str = "admin") -> Actor:
    return Actor(user=side.user(role), membership=side.memberships[role])


def make_kb(side, name: str = "Handbook", **extra) -> KnowledgeBase:
    with tenant_context(side.tenant):
        return services.create_knowledge_base(actor_for(side), name=name, **extra)


def upload(side, kb: KnowledgeBase, filename: str, data: bytes):
    with tenant_context(side.tenant):
        return services.upload_document(actor_for(side), kb, SimpleUploadedFile(filename, data))


def ingest(side, kb: KnowledgeBase, filename: str, data: bytes | str) -> Document:
    if isinstance(data, str):
        data = data.encode()
    result = upload(side, kb, filename, data)
    with tenant_context(side.tenant):
        services.ingest_document(side.tenant, result.document.pk, result.document.version)
        return Document.objects.get(pk=result.document.pk)


def make_knowledge_rows(side, label: str):
    """A base, a ready document and one chunk written directly (no entitlement, no task):
    targets for the isolation walk of every route. The text carries `label`."""
    from agents.knowledge.models import Chunk, DocumentStatus

    with tenant_context(side.tenant):
        kb = KnowledgeBase.objects.create(name=f"{label} handbook")
        document = Document.objects.create(
            knowledge_base=kb,
            title=f"{label} secret policy",
            filename="policy.txt",
            kind="txt",
            size=10,
            checksum="0" * 64,
            status=DocumentStatus.READY,
            chunk_count=1,
        )
        chunk = Chunk.objects.create(
            knowledge_base=kb,
            document=document,
            position=0,
            title=document.title,
            text=f"{label} secret refund rule: 30 days.",
        )
    return kb, document, chunk

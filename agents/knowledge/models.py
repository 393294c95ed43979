"""Knowledge bases, their documents and the chunks retrieval ranks.

Every row is tenant-owned (TenantOwnedModel): the default managers raise
without a tenant, and on PostgreSQL row-level security backs them up.

The full-text index is kept next to the chunks by the database itself, so no
code path can forget it (migration 0002):

* SQLite: an FTS5 table `knowledge_chunk_fts` maintained by triggers on
  `knowledge_chunk`; its terms carry the tenant (`t<id>z<word>`, see fts.py) and a
  knowledge-base token (`k<id>`), so the tenant and base filters are part of the
  MATCH expression itself;
* PostgreSQL: a generated `search_vector tsvector` column with a GIN index.

Deleting a chunk (directly, or by cascade from its document, knowledge base or
tenant) therefore deletes its index entry in the same statement.
"""

from __future__ import annotations

import os

from django.conf import settings
from django.core.files.storage import FileSystemStorage
from django.db import models

from tenants.scoping import TenantOwnedModel


class Backend(models.TextChoices):
    LOCAL = "local", "Local full-text search"
    HYBRID = "hybrid", "Hybrid (full-text + embeddings)"
    BEDROCK = "bedrock", "Amazon Bedrock Knowledge Bases"


class DocumentStatus(models.TextChoices):
    UPLOADED = "uploaded", "Uploaded"
    PARSING = "parsing", "Parsing"
    INDEXING = "indexing", "Indexing"
    READY = "ready", "Ready"
    FAILED = "failed", "Failed"


IN_PROGRESS = (DocumentStatus.UPLOADED, DocumentStatus.PARSING, DocumentStatus.INDEXING)


class KnowledgeStorage(FileSystemStorage):
    """Files under KNOWLEDGE_FILES_DIR, read at each use (so a test or a deployment can
    move the folder with the setting; Django builds a field's storage only once)."""

    @property
    def base_location(self):
        return str(settings.KNOWLEDGE_FILES_DIR)

    @property
    def location(self):
        return os.path.abspath(self.base_location)


_storage = KnowledgeStorage()


def knowledge_storage() -> FileSystemStorage:
    return _storage


def document_path(instance: Document, filename: str) -> str:
    return f"t{instance.tenant_id}/kb{instance.knowledge_base_id}/{instance.checksum[:16]}-{filename}"


class KnowledgeBase(TenantOwnedModel):
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=500, blank=True)
    backend = models.CharField(max_length=10, choices=Backend.choices, default=Backend.LOCAL)
    # Characters, not tokens: chunk boundaries must not depend on a model's tokenizer.
    chunk_size = models.PositiveIntegerField(default=1200)
    chunk_overlap = models.PositiveIntegerField(default=150)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="knowledge_base_name_unique")]

    def __str__(self) -> str:
        return self.name


class Document(TenantOwnedModel):
    knowledge_base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="documents")
    title = models.CharField(max_length=300)
    filename = models.CharField(max_length=255)
    file = models.FileField(upload_to=document_path, storage=knowledge_storage, max_length=500, blank=True)
    kind = models.CharField(max_length=10)  # txt md html pdf csv docx
    size = models.PositiveBigIntegerField(default=0)
    checksum = models.CharField(max_length=64)  # sha256 of the file's bytes
    status = models.CharField(max_length=10, choices=DocumentStatus.choices, default=DocumentStatus.UPLOADED)
    error = models.CharField(max_length=500, blank=True)
    version = models.PositiveIntegerField(default=1)
    chunk_count = models.PositiveIntegerField(default=0)
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    external_key = models.CharField(max_length=500, blank=True)  # bedrock backend: the S3 key
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    indexed_at = models.DateTimeField(null=True, blank=True)
    # Which other tenants' markers (names, slugs, ids, canaries: casefolded, as the output
    # guardrails' MarkerMatcher has them) the document's chunks hold in any spelling, and the
    # fingerprint of the matcher they were looked for with. Written with the chunks by
    # ingestion; rescanned in the background when the set of tenants changes (a stale
    # fingerprint). A turn reads only these lists: agents.guardrails.services.markers_in_own_documents.
    other_tenant_markers = models.JSONField(default=list, blank=True)
    markers_fingerprint = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["title", "id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "knowledge_base", "filename"], name="document_filename_unique")
        ]

    def __str__(self) -> str:
        return self.title

    @property
    def in_progress(self) -> bool:
        return self.status in IN_PROGRESS


class Chunk(TenantOwnedModel):
    knowledge_base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="+")
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    position = models.PositiveIntegerField()
    title = models.CharField(max_length=500, blank=True)  # document title › section heading
    text = models.TextField()
    metadata = models.JSONField(default=dict, blank=True)  # heading, page, version
    # hybrid backend: the chunk's embedding as little-endian float32s (None until embedded).
    embedding = models.BinaryField(null=True, blank=True)

    class Meta:
        ordering = ["document", "position"]
        indexes = [models.Index(fields=["tenant", "knowledge_base"], name="chunk_tenant_kb")]
        constraints = [models.UniqueConstraint(fields=["document", "position"], name="chunk_position_unique")]

    def __str__(self) -> str:
        return f"{self.title} #{self.position}"


class AgentKnowledge(TenantOwnedModel):
    """Which of the tenant's knowledge bases an agent reads. An agent with no rows
    reads all of them (the simple default for a tenant with one or two bases);
    the tenant admin narrows it per agent on the knowledge page. The link is
    owned by the tenant, so a shared agent reads different bases in each tenant."""

    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="+")
    knowledge_base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="agent_links")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "agent", "knowledge_base"], name="agent_knowledge_unique")
        ]

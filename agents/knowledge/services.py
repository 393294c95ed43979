"""What can be done with knowledge bases: the verbs views, the API, tasks and the gateway call.

Admin verbs take an `Actor`, check the role table and the tenant's entitlement,
write the audit log, and raise `ServiceError` for requests that cannot be
carried out. Ingestion (`ingest_document`) runs in a Celery task; its failures
are stored on the document, never raised at anyone.

Retrieval for agents (`retrieve_for_token`) is the one function behind the
gateway endpoint and the in-process gateway of the local runtime: it validates
the act-on-behalf token with the gateways' prologue (`tenants.identity.gateway`), requires the
`kb:read` scope, and searches only the token's tenant.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.urls import reverse
from django.utils import timezone

from agents.knowledge import chunking, parsing, retrieval
from agents.knowledge.models import (
    AgentKnowledge,
    Backend,
    Chunk,
    Document,
    DocumentStatus,
    KnowledgeBase,
)
from tenants import audit, entitlements
from tenants.context import require_tenant, tenant_context
from tenants.identity.gateway import GatewayRefused, agent_call
from tenants.models import Tenant
from tenants.roles import Action, can, require
from tenants.services import Actor, ServiceError

log = logging.getLogger(__name__)

FEATURE = "knowledge_bases"
DEFAULT_PASSAGES = 5
SCOPE = "kb:read"
MIN_CHUNK_SIZE, MAX_CHUNK_SIZE = 200, 8000


def entitled(tenant: Tenant) -> bool:
    return entitlements.has_feature(tenant, FEATURE)


def _check(actor: Actor, action: str = Action.MANAGE_KNOWLEDGE) -> Tenant:
    tenant = require_tenant()
    if actor.membership is None or actor.membership.tenant_id != tenant.pk:
        raise ServiceError("You are not a member of this tenant.")
    require(actor.role, action)
    if not entitled(tenant):
        raise ServiceError(f"Knowledge bases are not part of the {tenant.tier.name} plan.")
    return tenant


# --- access helpers: "missing" and "someone else's" look the same --------------------------------


def _int_id(value) -> int | None:
    raw = str(value)
    if raw.isascii() and raw.isdigit() and len(raw) < 19:
        return int(raw)
    return None


def access_knowledge_base(kb_id, *, role: str | None) -> KnowledgeBase | None:
    """The base by id if `role` may read it (see readable_knowledge_bases), else None."""
    pk = _int_id(kb_id)
    return readable_knowledge_bases(role=role).filter(pk=pk).first() if pk is not None else None


def access_document(doc_id, *, role: str | None) -> Document | None:
    """The document by id if `role` may read its base (see readable_knowledge_bases), else None."""
    pk = _int_id(doc_id)
    if pk is None:
        return None
    documents = Document.objects.filter(knowledge_base__in=readable_knowledge_bases(role=role))
    return documents.select_related("knowledge_base").filter(pk=pk).first()


def access_chunk(chunk_id) -> Chunk | None:
    pk = _int_id(chunk_id)
    return Chunk.objects.select_related("document", "knowledge_base").filter(pk=pk).first() if pk is not None else None


# --- knowledge bases ---------------------------------------------------------------------------------


def _validate_settings(
    name: str,
    description: str,
    backend: str,
    chunk_size: int,
    chunk_overlap: int,
    *,
    name_taken: Callable[[str], bool],
) -> None:
    """Every reason the settings are refused, each beside its field and all at once: a form that
    told one at a time would be sent again for each. `name_taken` is asked only of a name that
    is otherwise fine (PostgreSQL refuses a NUL even in a query)."""
    errors: dict[str, list[str]] = {}

    def refuse(field: str, reason: str) -> None:
        errors.setdefault(field, []).append(reason)

    if not name.strip():
        refuse("name", "Give the knowledge base a name.")
    elif len(name) > 100:
        refuse("name", "At most 100 characters.")
    # The screens pass raw form values (the API's serializer rejects these itself); PostgreSQL
    # cannot store a NUL character, so without this check it would fail the save with a 500.
    if len(description.strip()) > 500:
        refuse("description", "At most 500 characters.")
    for field, value in (("name", name), ("description", description)):
        if "\x00" in value:
            refuse(field, "Null characters are not allowed.")
    if "name" not in errors and name_taken(name):
        refuse("name", NAME_TAKEN)
    if backend not in Backend.values:
        refuse("backend", f"Choose one of {', '.join(Backend.values)}.")
    size_ok = MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE
    if not size_ok:
        refuse("chunk_size", f"Between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE} characters.")
    # Half of a passage size that is refused anyway is no limit to name: then only a
    # negative overlap is wrong, and the bound is checked once the size is right.
    if chunk_overlap < 0 or (size_ok and chunk_overlap > chunk_size // 2):
        half = f" ({chunk_size // 2} characters)" if size_ok else ""
        refuse("chunk_overlap", f"Between 0 and half the passage size{half}.")
    if errors:
        raise ServiceError(errors)


NAME_TAKEN = "A knowledge base with this name exists already."


def _name_taken(name: str, exclude: int | None = None) -> bool:
    """Whether another of the tenant's bases has this name, in any case. Checked first for a
    clear answer; the unique constraint (exact case) still decides a race between two admins."""
    return KnowledgeBase.objects.filter(name__iexact=name).exclude(pk=exclude).exists()


def create_knowledge_base(
    actor: Actor,
    *,
    name: str,
    description: str = "",
    backend: str = Backend.LOCAL,
    chunk_size: int = 1200,
    chunk_overlap: int = 150,
) -> KnowledgeBase:
    tenant = _check(actor)
    name = name.strip()
    _validate_settings(name, description, backend, chunk_size, chunk_overlap, name_taken=_name_taken)
    try:
        with transaction.atomic():
            kb = KnowledgeBase.objects.create(
                name=name,
                description=description.strip(),
                backend=backend,
                chunk_size=chunk_size,
                chunk_overlap=chunk_overlap,
            )
            audit.record(
                "knowledge.base_created",
                actor=actor.user,
                tenant=tenant,
                target=kb,
                after={"name": kb.name, "backend": kb.backend},
                ip=actor.ip,
            )
    except IntegrityError:
        raise ServiceError({"name": NAME_TAKEN})
    return kb


def update_knowledge_base(actor: Actor, kb: KnowledgeBase, *, name: str, description: str) -> KnowledgeBase:
    tenant = _check(actor)
    name = name.strip()
    _validate_settings(
        name,
        description,
        kb.backend,
        kb.chunk_size,
        kb.chunk_overlap,
        name_taken=lambda name: _name_taken(name, exclude=kb.pk),
    )
    before = {"name": kb.name, "description": kb.description}
    kb.name, kb.description = name, description.strip()
    try:
        with transaction.atomic():
            kb.save(update_fields=["name", "description", "updated_at"])
            audit.record(
                "knowledge.base_updated",
                actor=actor.user,
                tenant=tenant,
                target=kb,
                before=before,
                after={"name": kb.name, "description": kb.description},
                ip=actor.ip,
            )
    except IntegrityError:
        # Another admin took the name since _name_taken looked: nothing was saved, and the
        # base keeps its saved name and description (the page's heading shows them).
        kb.name, kb.description = before["name"], before["description"]
        raise ServiceError({"name": NAME_TAKEN})
    return kb


def _remove_files(paths: list[str]) -> None:
    from agents.knowledge.models import knowledge_storage

    storage = knowledge_storage()
    for path in paths:
        if path:
            try:
                storage.delete(path)
            except OSError:
                log.warning("could not delete knowledge file %s", path)


def delete_knowledge_base(actor: Actor, kb: KnowledgeBase) -> None:
    """The base, its documents, their chunks and index entries (the FTS triggers / the
    generated column go with the rows), in one transaction; files after commit."""
    tenant = _check(actor)
    documents = list(Document.objects.filter(knowledge_base=kb))
    paths = [d.file.name for d in documents]
    with transaction.atomic():
        from agents.knowledge import bedrock

        if bedrock.serves(kb.backend):
            for document in documents:
                bedrock.remove_document(tenant, document)
        audit.record(
            "knowledge.base_deleted",
            actor=actor.user,
            tenant=tenant,
            target=kb,
            before={"name": kb.name, "documents": len(documents)},
            ip=actor.ip,
        )
        kb.delete()
        transaction.on_commit(lambda: _remove_files(paths))


# --- storage: what a tenant's documents take, and what its tier allows ---------------------------

MB = 1024 * 1024


def megabytes(size: int) -> str:
    """A size as people read it next to a limit in MB: "0.7 MB", small ones "12 KB"."""
    if size >= MB // 10:
        return f"{size / MB:,.1f} MB"
    return f"{-(-size // 1024)} KB" if size else "0 MB"


@dataclass(frozen=True)
class Storage:
    used: int  # bytes of the tenant's stored documents
    limit_mb: int  # the tier's knowledge_storage_mb

    @property
    def limit(self) -> int:
        return self.limit_mb * MB

    @property
    def free(self) -> int:
        return max(self.limit - self.used, 0)

    @property
    def full(self) -> bool:
        return self.used >= self.limit

    def describe(self) -> str:
        return f"{megabytes(self.used)} of {self.limit_mb:,} MB used"


def storage_used(tenant: Tenant) -> int:
    """Bytes of `tenant`'s stored documents, in every knowledge base: the current version of
    each (a new version's file replaces the old one's), whatever its status (a failed
    document's file is stored too). A deleted document no longer counts."""
    return Document.objects.filter(tenant_id=tenant.pk).aggregate(total=Sum("size"))["total"] or 0


def storage(tenant: Tenant) -> Storage:
    return Storage(used=storage_used(tenant), limit_mb=entitlements.effective_limits(tenant).knowledge_storage_mb)


def _check_storage(tenant: Tenant, filename: str, size: int, replaces: int) -> None:
    """Refuse a file of `size` bytes (replacing one of `replaces` bytes) that would take the
    tenant past its tier's knowledge storage."""
    current = storage(tenant)
    if current.used - replaces + size > current.limit:
        raise ServiceError(
            f"{filename} ({megabytes(size)}) does not fit in the knowledge storage of the {tenant.tier.name} plan: "
            f"{current.describe()}. Delete documents you no longer need, or ask your provider for a plan with more."
        )


# --- documents ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadResult:
    document: Document
    outcome: str  # "created" | "new_version" | "unchanged"


def clean_filename(name: str) -> str:
    name = unicodedata.normalize("NFC", os.path.basename(str(name).replace("\\", "/"))).strip()
    name = "".join(ch for ch in name if ch.isprintable() and ch not in '<>:"|?*')
    return name[:200]


def upload_document(actor: Actor, kb: KnowledgeBase, uploaded) -> UploadResult:
    """Store one uploaded file and queue its ingestion.

    Same bytes as a document the base already has: nothing happens. Same file name
    with other bytes: a new version (its chunks replace the old ones when it is
    indexed). Wrong type, empty or too large: refused here, before anything is stored.
    """
    tenant = _check(actor)
    filename = clean_filename(getattr(uploaded, "name", "") or "")
    if not filename:
        raise ServiceError("The file has no name.")
    kind = parsing.kind_for(filename)
    if kind is None:
        raise ServiceError(f"{filename}: only .txt, .md, .html, .pdf, .csv and .docx files can be added.")
    limit = settings.KNOWLEDGE_MAX_UPLOAD_BYTES
    size = getattr(uploaded, "size", None)
    if size is not None and size > limit:
        raise ServiceError(f"{filename} is larger than the {limit // (1024 * 1024) or 1} MB limit.")
    uploaded.seek(0)
    data = uploaded.read(limit + 1)
    if len(data) > limit:
        raise ServiceError(f"{filename} is larger than the {limit // (1024 * 1024) or 1} MB limit.")
    if not data:
        raise ServiceError(f"{filename} is empty.")
    checksum = hashlib.sha256(data).hexdigest()
    same = Document.objects.filter(knowledge_base=kb, checksum=checksum).exclude(status=DocumentStatus.FAILED).first()
    if same is not None:
        return UploadResult(same, "unchanged")
    from django.core.files.base import ContentFile

    try:
        return _store_upload(actor, tenant, kb, filename, kind, data, checksum, ContentFile)
    except IntegrityError:
        # Two uploads of the same new file name at the same moment: one wins, the other is told.
        raise ServiceError(f"{filename} was being uploaded by someone else at the same time; try again.")


def _store_upload(actor, tenant, kb, filename, kind, data, checksum, ContentFile) -> UploadResult:
    with transaction.atomic():
        # Two uploads at once must not both pass the storage check on the same bytes used: the
        # tenant's row is locked (first, before the document: every upload takes them in this
        # order) until this upload's document is written and committed, so the next one waits
        # and then counts it. Only the tenant's own row: other tenants of its tier upload on.
        Tenant.objects.select_for_update(of=("self",)).filter(pk=tenant.pk).values_list("pk", flat=True).first()
        document = Document.objects.select_for_update().filter(knowledge_base=kb, filename=filename).first()
        _check_storage(tenant, filename, len(data), replaces=document.size if document is not None else 0)
        old_path = ""
        if document is None:
            document = Document(
                knowledge_base=kb,
                filename=filename,
                title=os.path.splitext(filename)[0][:300] or filename,
                kind=kind,
                uploaded_by=actor.user,
            )
            outcome = "created"
        else:
            old_path = document.file.name
            document.version += 1
            outcome = "new_version"
        document.size = len(data)
        document.checksum = checksum
        document.status = DocumentStatus.UPLOADED
        document.error = ""
        document.kind = kind
        document.uploaded_by = actor.user
        document.file.save(filename, ContentFile(data), save=False)
        document.save()
        audit.record(
            "knowledge.document_uploaded" if outcome == "created" else "knowledge.document_replaced",
            actor=actor.user,
            tenant=tenant,
            target=document,
            after={"knowledge_base": kb.name, "filename": filename, "version": document.version, "size": len(data)},
            ip=actor.ip,
        )
        _enqueue_ingestion(tenant, document)
        if old_path and old_path != document.file.name:
            transaction.on_commit(lambda: _remove_files([old_path]))
    return UploadResult(document, outcome)


def _enqueue_ingestion(tenant: Tenant, document: Document) -> None:
    from agents.knowledge import tasks

    doc_id, version = document.pk, document.version
    transaction.on_commit(
        lambda: tasks.ingest_document.apply_async(args=[tenant.pk, doc_id, version], queue=tenant.bindings.celery_queue)
    )


def _enqueue_rescan(tenant: Tenant) -> None:
    from agents.knowledge import tasks

    transaction.on_commit(
        lambda: tasks.rescan_document_markers.apply_async(args=[tenant.pk], queue=tenant.bindings.celery_queue)
    )


def reindex_document(actor: Actor, document: Document) -> Document:
    """Parse and index the stored file again (after a failure, or new chunk settings)."""
    tenant = _check(actor)
    with transaction.atomic():
        Document.objects.filter(pk=document.pk).update(status=DocumentStatus.UPLOADED, error="")
        document.refresh_from_db()
        _enqueue_ingestion(tenant, document)
    return document


def delete_document(actor: Actor, document: Document) -> None:
    tenant = _check(actor)
    path = document.file.name
    with transaction.atomic():
        from agents.knowledge import bedrock

        if bedrock.serves(document.knowledge_base.backend):
            try:
                bedrock.remove_document(tenant, document)
            except bedrock.BedrockUnavailable as exc:  # logged with AWS's code by bedrock
                raise ServiceError(f"The document was not deleted. {exc.text}") from exc
        audit.record(
            "knowledge.document_deleted",
            actor=actor.user,
            tenant=tenant,
            target=document,
            before={"filename": document.filename, "version": document.version, "chunks": document.chunk_count},
            ip=actor.ip,
        )
        document.delete()  # chunks cascade; their index entries go with them
        transaction.on_commit(lambda: _remove_files([path]))


# --- ingestion (Celery) -----------------------------------------------------------------------------


# Which setting or binding is missing is the operator's business (the log names it).
NOT_SET_UP = "Amazon Bedrock is not fully set up for this organisation's knowledge bases. Ask your provider's operator."


def _fail(document_id: int, version: int, message: str) -> None:
    Document.objects.filter(pk=document_id, version=version).update(
        status=DocumentStatus.FAILED, error=message[:500], updated_at=timezone.now()
    )


def build_chunks(document: Document, data: bytes) -> list[Chunk]:
    kb = document.knowledge_base
    sections = parsing.parse(document.kind, data)
    pieces = chunking.chunk_sections(sections, kb.chunk_size, kb.chunk_overlap)
    if not pieces:
        raise parsing.ParseError("The file has no text to index.")
    chunks = []
    for position, piece in enumerate(pieces):
        title = f"{document.title} › {piece.heading}" if piece.heading else document.title
        metadata = {"version": document.version}
        if piece.heading:
            metadata["heading"] = piece.heading
        if piece.page is not None:
            metadata["page"] = piece.page
        chunks.append(
            Chunk(
                tenant_id=document.tenant_id,
                knowledge_base_id=kb.pk,
                document_id=document.pk,
                position=position,
                title=title[:500],
                text=piece.text,
                metadata=metadata,
            )
        )
    return chunks


def ingest_document(tenant: Tenant, document_id: int, version: int) -> str:
    """parse → chunk → index one version of a document. Safe to run twice: it claims
    the version with a conditional update, and a newer upload wins over an older task."""
    claimed = Document.objects.filter(pk=document_id, version=version, status=DocumentStatus.UPLOADED).update(
        status=DocumentStatus.PARSING, updated_at=timezone.now()
    )
    if not claimed:
        return "skipped"
    document = Document.objects.select_related("knowledge_base").get(pk=document_id)
    try:
        with document.file.open("rb") as handle:
            data = handle.read(settings.KNOWLEDGE_MAX_UPLOAD_BYTES + 1)
        chunks = build_chunks(document, data)
        Document.objects.filter(pk=document_id, version=version).update(status=DocumentStatus.INDEXING)
        # Other tenants' markers the text holds, stored with the chunks: a turn reads only this
        # list, never the text (agents.guardrails.services.markers_in_own_documents).
        from agents.guardrails.services import build_other_tenant_markers, tenants_generation

        generation = tenants_generation()
        matcher = build_other_tenant_markers()
        markers = _markers_of(matcher, (chunk.text for chunk in chunks))
        backend = document.knowledge_base.backend
        if backend == Backend.HYBRID:
            from agents.knowledge import hybrid

            usage = hybrid.embed_chunks(chunks)
            # The service was paid for these tokens whatever happens to the version next (a
            # newer upload may supersede it): billed now, once per version (the key).
            from billing.metering import document_embedding_key, record_embedding

            record_embedding(
                tenant.pk,
                key=document_embedding_key(tenant.pk, document_id, version),
                model_key=usage.model_key,
                tokens=usage.tokens,
                estimated=usage.estimated,
                user_id=document.uploaded_by_id,
            )
        with transaction.atomic():
            current = Document.objects.select_for_update().filter(pk=document_id).first()
            if current is None or current.version != version:
                return "superseded"
            # The old version's chunks go and the new ones arrive in one transaction:
            # a search sees either version, never a mix or nothing.
            Chunk.objects.filter(document_id=document_id).delete()
            Chunk.objects.bulk_create(chunks, batch_size=500)
            from agents.knowledge import bedrock

            if bedrock.serves(backend):
                bedrock.sync_document(tenant, current, data)
            Document.objects.filter(pk=document_id).update(
                status=DocumentStatus.READY,
                error="",
                chunk_count=len(chunks),
                indexed_at=timezone.now(),
                updated_at=timezone.now(),
                other_tenant_markers=markers,
                markers_fingerprint=matcher.fingerprint,
            )
        if tenants_generation() != generation:
            # A tenant or canary changed while this ran: the markers may be stale already, and
            # the rescan that change started may have run before they were stored.
            _enqueue_rescan(tenant)
        return "ready"
    except parsing.ParseError as exc:
        _fail(document_id, version, str(exc))
        return "failed"
    except FileNotFoundError:
        _fail(document_id, version, "The stored file is missing; upload it again.")
        return "failed"
    except Exception as exc:
        from agents.knowledge.bedrock import BedrockNotConfigured, BedrockUnavailable
        from agents.knowledge.hybrid import EmbeddingError

        if isinstance(exc, EmbeddingError):
            _fail(document_id, version, f"The embedding service failed: {exc}")
            return "failed"
        if isinstance(exc, BedrockUnavailable):  # logged with AWS's code by bedrock.sync_document
            _fail(document_id, version, exc.text)
            return "failed"
        if isinstance(exc, BedrockNotConfigured):
            log.error("document %s v%s could not be synced to Bedrock: %s", document_id, version, exc)
            _fail(document_id, version, NOT_SET_UP)
            return "failed"
        log.exception("document %s v%s could not be indexed", document_id, version)
        _fail(document_id, version, "The document could not be indexed (an internal error); try again.")
        return "failed"


# --- agents and their knowledge ----------------------------------------------------------------------


def readable_knowledge_bases(*, role: str | None):
    """The tenant's knowledge bases a caller may see and search. Whoever manages knowledge
    (and a machine client, which passes role None) sees all of them; a member only the bases
    read by the agents members may use, so a base outside that set stays as unknown as a
    missing one. `role` has no default: every caller says whose reach it asks for, so a
    forgotten role is an error, never every base. A member's reach costs the same few
    queries however many agents the tenant has (the agents' links are read once)."""
    bases = KnowledgeBase.objects.all()
    if role is None or can(role, Action.MANAGE_KNOWLEDGE):
        return bases
    from agents import services as agent_services

    agent_ids = {agent.pk for agent in agent_services.agents_for_members(require_tenant())}
    linked = AgentKnowledge.objects.filter(agent_id__in=agent_ids).values_list("agent_id", "knowledge_base_id")
    linked_agents: set[int] = set()
    readable: set[int] = set()
    for agent_id, kb_id in linked:
        linked_agents.add(agent_id)
        readable.add(kb_id)
    if agent_ids - linked_agents:
        return bases  # an agent with no chosen bases reads all of them
    return bases.filter(pk__in=readable)


def knowledge_bases_for_agent(agent) -> list[KnowledgeBase]:
    """The bases `agent` reads in the current tenant: the chosen ones, or all when none is chosen."""
    chosen = list(KnowledgeBase.objects.filter(agent_links__agent=agent).distinct())
    return chosen or list(KnowledgeBase.objects.all())


def set_agent_knowledge(actor: Actor, agent, kb_ids: list[int]) -> list[KnowledgeBase]:
    tenant = _check(actor)
    chosen = list(KnowledgeBase.objects.filter(pk__in=kb_ids))
    if len(chosen) != len(set(kb_ids)):
        raise ServiceError("Unknown knowledge base.")
    before = sorted(AgentKnowledge.objects.filter(agent=agent).values_list("knowledge_base__name", flat=True))
    with transaction.atomic():
        AgentKnowledge.objects.filter(agent=agent).delete()
        AgentKnowledge.objects.bulk_create(
            [AgentKnowledge(tenant_id=tenant.pk, agent=agent, knowledge_base=kb) for kb in chosen]
        )
        audit.record(
            "knowledge.agent_bases_changed",
            actor=actor.user,
            tenant=tenant,
            target=agent,
            before={"knowledge_bases": before},
            after={"knowledge_bases": sorted(kb.name for kb in chosen)},
            ip=actor.ip,
        )
    return chosen


# --- retrieval --------------------------------------------------------------------------------------


def document_markers() -> frozenset[str]:
    """Which other tenants' markers the current tenant's documents hold (the union of what
    ingestion or the rescan stored with each; for the output guardrails:
    agents.guardrails.services.markers_in_own_documents). One query over the documents
    that hold any, without their text: most documents name no other tenant."""
    found: set[str] = set()
    for markers in Document.objects.exclude(other_tenant_markers=[]).values_list("other_tenant_markers", flat=True):
        found.update(markers)
    return frozenset(found)


# --- other tenants' markers in documents ---------------------------------------------------------

RESCAN_BATCH = 50


def _markers_of(matcher, texts) -> list[str]:
    return sorted(matcher.written_in(texts))


def rescan_document_markers(tenant: Tenant, batch: int | None = None) -> tuple[int, bool]:
    """Look again for other tenants' markers in up to `batch` of `tenant`'s
    documents whose stored markers were found with an older set of tenants (a stale
    fingerprint); returns (documents rescanned, whether stale ones remain).

    Runs in the tenant's context (set here, and by agents.knowledge.tasks.rescan_document_markers): every
    read goes through the tenant-scoped managers, and on PostgreSQL row-level security
    holds it to the tenant's rows. Each document is locked while its chunks are read and
    its markers written, as ingestion locks it to replace the chunks, so the markers
    stored are always those of the chunks stored."""
    from agents.guardrails.services import build_other_tenant_markers

    batch = batch or RESCAN_BATCH
    matcher = build_other_tenant_markers()
    with tenant_context(tenant):
        stale = Document.objects.exclude(markers_fingerprint=matcher.fingerprint).order_by("pk")
        ids = list(stale.values_list("pk", flat=True)[: batch + 1])
        for document_id in ids[:batch]:
            with transaction.atomic():
                locked = (
                    Document.objects.select_for_update()
                    .filter(pk=document_id)
                    .exclude(markers_fingerprint=matcher.fingerprint)
                    .values_list("pk", flat=True)
                    .first()
                )
                if locked is None:  # deleted, or ingested again meanwhile
                    continue
                texts = Chunk.objects.filter(document_id=document_id).order_by().values_list("text", flat=True)
                Document.objects.filter(pk=document_id).update(
                    other_tenant_markers=_markers_of(matcher, texts.iterator(chunk_size=500)),
                    markers_fingerprint=matcher.fingerprint,
                )
    return min(len(ids), batch), len(ids) > batch


def stale_marker_tenants() -> list[int]:
    """The tenants with documents whose markers were found with an older set of tenants.
    Reads across tenants the documents' tenant and fingerprint only, never their text."""
    from agents.guardrails.services import build_other_tenant_markers
    from tenants.context import all_tenants

    fingerprint = build_other_tenant_markers().fingerprint
    with all_tenants("knowledge: which tenants have documents to rescan for other tenants' markers"):
        stale = Document.unscoped.exclude(markers_fingerprint=fingerprint).order_by()
        return sorted(stale.values_list("tenant_id", flat=True).distinct())


def passage_url(tenant: Tenant, chunk: Chunk) -> str:
    return reverse("knowledge:passage", kwargs={"tenant_slug": tenant.slug, "chunk_id": chunk.pk})


def passages_from_hits(tenant: Tenant, hits: list[retrieval.Hit]) -> list[dict]:
    return [
        {
            "id": f"kb-{hit.chunk.pk}",
            "title": hit.chunk.title,
            "text": hit.chunk.text,
            "source": passage_url(tenant, hit.chunk),
            "score": round(hit.score, 6),
            "document_id": hit.chunk.document_id,
            "knowledge_base_id": hit.chunk.knowledge_base_id,
        }
        for hit in hits
    ]


def retrieve_for_token(
    raw_token: str, *, query: str, k: int = DEFAULT_PASSAGES, agent_slug: str = "", tenant_id: str | None = None
) -> dict:
    """Passages for an agent acting for a user: the body of the gateway endpoint,
    ``{"passages": [...], "unsearched": [names of the bases that could not be searched]}``.

    The token is checked by the gateways' one prologue (tenants.identity.gateway:
    aud agent-runtime, kb:read, an actor, the named tenant is the token's), and the
    search runs in the token's tenant only, whatever the caller sends.
    """
    from agents.guardrails.enforce import screen_retrieved
    from agents.knowledge import bedrock
    from agents.runtime_gateway import turn_in_progress

    def precheck(tenant: Tenant) -> None:
        if not entitled(tenant):
            raise GatewayRefused(403, f"Knowledge bases are not part of the {tenant.tier.name} plan.")
        if not isinstance(query, str) or not query.strip():
            raise GatewayRefused(400, "query: give the text to search for.")

    with agent_call(
        raw_token, SCOPE, agent_slug, tenant_id=tenant_id, precheck=precheck, name="knowledge gateway"
    ) as call:
        # Asked at most once (the query's embedding is billed to it, flagged passages belong to it).
        turn = functools.cache(lambda: turn_in_progress(call.token))
        meter = retrieval.Meter(user_id=getattr(call.user, "pk", None), agent_slug=call.agent.slug, turn=turn)
        try:
            found = retrieval.search_reporting(query, knowledge_bases_for_agent(call.agent), k=k, meter=meter)
        except bedrock.BedrockUnavailable as exc:  # logged with AWS's code by bedrock.ranking
            # As the memory gateway refuses a failing store: the runtime answers the turn
            # without passages and says so (agents.runtime.agent.ReferenceAgent.retrieve).
            # A throttle or an outage may pass: its 503 carries Retry-After (GatewayRefused).
            raise GatewayRefused(503 if exc.transient else 502, exc.text) from exc
        passages = passages_from_hits(call.tenant, found.hits)
        return {
            "passages": screen_retrieved(call.tenant, passages, turn=turn),
            "unsearched": found.missed,
        }

"""Knowledge screens: bases, upload with live status, test search, passages cited in chat.

Thin views: parse → access (tenant-scoped helpers: a foreign or missing id is a
404) → service → render. Managing needs MANAGE_KNOWLEDGE; reading a document or
a passage (what chat citations link to) needs USE_AGENTS, as a member who sees
a citation may open its source.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.http import Http404, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from agents.knowledge import bedrock, retrieval, services
from agents.knowledge.models import IN_PROGRESS, AgentKnowledge, Backend, Chunk, Document, KnowledgeBase
from agents.knowledge.retrieval import MAX_QUERY_CHARS
from tenants.access import int_or_404
from tenants.roles import Action, can
from tenants.services import Actor, ServiceError
from tenants.views import tenant_view


def _kb_or_404(request, kb_id) -> KnowledgeBase:
    kb = services.access_knowledge_base(int_or_404(kb_id), role=request.membership.role)
    if kb is None:
        raise Http404("No such knowledge base")
    return kb


def _document_or_404(request, document_id) -> Document:
    document = services.access_document(int_or_404(document_id), role=request.membership.role)
    if document is None:
        raise Http404("No such document")
    return document


def _int_field(value, default: int) -> int:
    """A whole number typed in a form; empty is `default`; anything else is -1, which the
    service refuses with its range (never quietly the default)."""
    text = str(value or "").strip()
    if not text:
        return default
    return int(text) if text.isascii() and text.isdigit() and len(text) < 7 else -1


CREATE_FIELDS = ("name", "description", "backend", "chunk_size", "chunk_overlap")
EDIT_FIELDS = ("name", "description")  # the backend and passage sizes are fixed once documents are cut


@tenant_view(Action.MANAGE_KNOWLEDGE)
def home(request):
    return _home(request)


def _home(request, *, typed: dict | None = None, errors: dict | None = None):
    """The knowledge page; after a refused new knowledge base, with what was typed and why (400)."""
    from django.db.models import Count

    from agents import services as agent_services

    entitled = services.entitled(request.tenant)
    bases = list(KnowledgeBase.objects.annotate(document_count=Count("documents")).order_by("name"))
    agents = agent_services.agents_for_members(request.tenant)
    links: dict[int, set[int]] = {}
    for agent_id, kb_id in AgentKnowledge.objects.values_list("agent_id", "knowledge_base_id"):
        links.setdefault(agent_id, set()).add(kb_id)
    agent_rows = [{"agent": a, "chosen": links.get(a.pk, set())} for a in agents]
    context = {
        "entitled": entitled,
        "storage": services.storage(request.tenant) if entitled else None,
        "bases": bases,
        "agent_rows": agent_rows,
        "backends": Backend.choices,
        # Bound to its own Bedrock knowledge base, but on embedded defaults: the portal's index serves it.
        "unused_kb_id": bedrock.unused_binding(request.tenant),
        "typed": typed or {"backend": Backend.LOCAL, "chunk_size": "1200", "chunk_overlap": "150"},
        "errors": errors or {},
        "form_errors": (errors or {}).get("__all__", []),
    }
    return render(request, "knowledge/home.html", context, status=400 if errors else 200)


@require_POST
@tenant_view(Action.MANAGE_KNOWLEDGE)
def kb_create(request):
    typed = {field: request.POST.get(field, "") for field in CREATE_FIELDS}
    try:
        kb = services.create_knowledge_base(
            Actor.from_request(request),
            name=typed["name"],
            description=typed["description"],
            backend=typed["backend"] or Backend.LOCAL,
            chunk_size=_int_field(typed["chunk_size"], 1200),
            chunk_overlap=_int_field(typed["chunk_overlap"], 150),
        )
    except ServiceError as exc:
        # Shown beside the fields, the form filled with what was typed (a redirect lost it).
        errors = exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}
        return _home(request, typed=typed, errors=errors)
    messages.success(request, f"Knowledge base “{kb.name}” created. Add documents to it below.")
    return redirect("knowledge:detail", tenant_slug=request.tenant.slug, kb_id=kb.pk)


def _documents_context(request, kb) -> dict:
    documents = list(Document.objects.filter(knowledge_base=kb).order_by("title", "id"))
    return {
        "kb": kb,
        "documents": documents,
        "chunk_total": Chunk.objects.filter(knowledge_base=kb).count(),
        "polling": any(d.status in IN_PROGRESS for d in documents),
        "storage": services.storage(request.tenant) if services.entitled(request.tenant) else None,
    }


@tenant_view(Action.MANAGE_KNOWLEDGE)
def kb_detail(request, kb_id):
    return _detail(request, _kb_or_404(request, kb_id))


def _detail(request, kb, *, typed: dict | None = None, errors: dict | None = None):
    """The base's page; after a refused edit, its settings form with what was typed and why (400)."""
    context = _documents_context(request, kb)
    context.update(
        {
            "entitled": services.entitled(request.tenant),
            "max_upload_mb": settings.KNOWLEDGE_MAX_UPLOAD_BYTES // (1024 * 1024),
            "max_upload_bytes": settings.KNOWLEDGE_MAX_UPLOAD_BYTES,
            "typed": typed or {"name": kb.name, "description": kb.description},
            "errors": errors or {},
            # A refusal about no field of the form (say a stored setting the rules no longer allow)
            # is shown above it, never dropped.
            "form_errors": [
                e for field, reasons in (errors or {}).items() if field not in EDIT_FIELDS for e in reasons
            ],
        }
    )
    return render(request, "knowledge/detail.html", context, status=400 if errors else 200)


@tenant_view(Action.MANAGE_KNOWLEDGE)
def documents_fragment(request, kb_id):
    """The documents table alone, and the base's counts out of band: fetched after an upload
    and polled by htmx while any document is still being ingested."""
    kb = _kb_or_404(request, kb_id)
    return render(request, "knowledge/_documents.html", {**_documents_context(request, kb), "oob_summary": True})


@require_POST
@tenant_view(Action.MANAGE_KNOWLEDGE)
def kb_edit(request, kb_id):
    kb = _kb_or_404(request, kb_id)
    typed = {field: request.POST.get(field, "") for field in EDIT_FIELDS}
    try:
        services.update_knowledge_base(Actor.from_request(request), kb, **typed)
    except ServiceError as exc:
        # Shown beside the fields, the form filled with what was typed (a redirect lost it).
        errors = exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}
        return _detail(request, kb, typed=typed, errors=errors)
    messages.success(request, "Saved.")
    return redirect("knowledge:detail", tenant_slug=request.tenant.slug, kb_id=kb.pk)


@require_POST
@tenant_view(Action.MANAGE_KNOWLEDGE)
def kb_delete(request, kb_id):
    kb = _kb_or_404(request, kb_id)
    try:
        services.delete_knowledge_base(Actor.from_request(request), kb)
    except ServiceError as exc:
        messages.error(request, exc.text)
        return redirect("knowledge:detail", tenant_slug=request.tenant.slug, kb_id=kb.pk)
    messages.success(request, f"Knowledge base “{kb.name}” and all its documents were deleted.")
    return redirect("knowledge:home", tenant_slug=request.tenant.slug)


def _wants_json(request) -> bool:
    return request.headers.get("X-Requested-With") == "XMLHttpRequest" or "application/json" in request.headers.get(
        "Accept", ""
    )


@require_POST
@tenant_view(Action.MANAGE_KNOWLEDGE)
def document_upload(request, kb_id):
    """One or more files (`files`). The upload script sends one file per request, so each
    gets its own progress bar and its own answer; without JavaScript the form sends all."""
    kb = _kb_or_404(request, kb_id)
    files = request.FILES.getlist("files")
    results = []
    if not files:
        results.append({"file": "", "ok": False, "message": "Choose at least one file."})
    for uploaded in files[:50]:
        try:
            result = services.upload_document(Actor.from_request(request), kb, uploaded)
        except ServiceError as exc:
            results.append({"file": uploaded.name[:200], "ok": False, "message": exc.text})
            continue
        text = {
            "created": "Uploaded; it is being indexed.",
            "new_version": f"Uploaded as version {result.document.version}; it replaces the old one once indexed.",
            "unchanged": "This exact file is already in the knowledge base; nothing changed.",
        }[result.outcome]
        results.append(
            {
                "file": result.document.filename,
                "ok": True,
                "outcome": result.outcome,
                "message": text,
                "document": result.document.pk,  # the page follows its status in the documents table
            }
        )
    if _wants_json(request):
        status = 200 if all(r["ok"] for r in results) else 400
        return JsonResponse({"results": results}, status=status)
    for r in results:
        (messages.success if r["ok"] else messages.error)(request, f"{r['file']}: {r['message']}".lstrip(": "))
    return redirect("knowledge:detail", tenant_slug=request.tenant.slug, kb_id=kb.pk)


@tenant_view(Action.MANAGE_KNOWLEDGE)
def kb_search(request, kb_id):
    kb = _kb_or_404(request, kb_id)
    query = request.GET.get("q", "")[:MAX_QUERY_CHARS].strip()
    hits, unavailable = [], ""
    if query and services.entitled(request.tenant):
        try:
            hits = retrieval.search(query, [kb], k=10, meter=retrieval.Meter(user_id=request.user.pk))
        except bedrock.BedrockUnavailable as exc:  # logged with AWS's code by bedrock.ranking
            unavailable = exc.text
    template = "knowledge/_search_results.html" if request.htmx else "knowledge/search.html"
    # 200 either way: htmx swaps only a 2xx answer into the page, and the form keeps the query.
    return render(request, template, {"kb": kb, "query": query, "hits": hits, "unavailable": unavailable})


@require_POST
@tenant_view(Action.MANAGE_KNOWLEDGE)
def agent_knowledge(request):
    from agents import services as agent_services

    agent_pk = int_or_404(request.POST.get("agent", ""))
    agent = next((a for a in agent_services.agents_for_members(request.tenant) if a.pk == agent_pk), None)
    if agent is None:
        raise Http404("No such agent")
    chosen = [int(v) for v in request.POST.getlist("knowledge_bases") if v.isascii() and v.isdigit() and len(v) < 19]
    try:
        bases = services.set_agent_knowledge(Actor.from_request(request), agent, chosen)
    except ServiceError as exc:
        messages.error(request, exc.text)
    else:
        names = ", ".join(kb.name for kb in bases) or "all knowledge bases"
        messages.success(request, f"{agent.name} now reads {names}.")
    return redirect(reverse("knowledge:home", kwargs={"tenant_slug": request.tenant.slug}) + "#agents")


@tenant_view(Action.USE_AGENTS)
def document_detail(request, document_id):
    document = services.access_document(int_or_404(document_id), role=request.membership.role)
    if document is None:
        raise Http404("No such document")
    chunks = Chunk.objects.filter(document=document).order_by("position")
    context = {
        "document": document,
        "chunks": chunks,
        "may_manage": can(request.membership.role, Action.MANAGE_KNOWLEDGE),
    }
    return render(request, "knowledge/document.html", context)


@require_POST
@tenant_view(Action.MANAGE_KNOWLEDGE)
def document_delete(request, document_id):
    document = _document_or_404(request, document_id)
    kb = document.knowledge_base
    try:
        services.delete_document(Actor.from_request(request), document)
        messages.success(request, f"“{document.title}” and its passages were deleted.")
    except ServiceError as exc:
        messages.error(request, exc.text)
    return redirect("knowledge:detail", tenant_slug=request.tenant.slug, kb_id=kb.pk)


@require_POST
@tenant_view(Action.MANAGE_KNOWLEDGE)
def document_reindex(request, document_id):
    document = _document_or_404(request, document_id)
    try:
        services.reindex_document(Actor.from_request(request), document)
        messages.success(request, f"“{document.title}” is being indexed again.")
    except ServiceError as exc:
        messages.error(request, exc.text)
    return redirect("knowledge:detail", tenant_slug=request.tenant.slug, kb_id=document.knowledge_base_id)


@tenant_view(Action.USE_AGENTS)
def passage(request, chunk_id):
    """What a chat citation links to: the passage, in its document."""
    chunk = services.access_chunk(int_or_404(chunk_id))
    if chunk is None:
        raise Http404("No such passage")
    url = reverse("knowledge:document", kwargs={"tenant_slug": request.tenant.slug, "document_id": chunk.document_id})
    return redirect(f"{url}#passage-{chunk.pk}")

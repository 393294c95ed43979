"""The Memory page: a member sees and deletes their own memories (per agent) and reads the
tenant's shared ones; owners and admins also add and delete shared memories, see how many
memories each member has (never their contents) and may clear a member's memory. Every
change is audited (services). A silo tenant bound to AgentCore Memory has its records
listed, added and deleted there (the same actions, through stores.AgentCoreStore); AWS
failing is a message on the page, never a 500."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import prefetch_related_objects
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from agents.memory import policy, services, stores
from agents.memory.forms import SharedMemoryForm
from tenants.access import access_membership
from tenants.roles import Action
from tenants.services import Actor, ServiceError
from tenants.views import tenant_view

log = logging.getLogger(__name__)


@tenant_view(Action.USE_AGENTS)
def home(request):
    return _home(request)


def _home(request, shared_form: SharedMemoryForm | None = None, status: int = 200):
    from agents import services as agent_services

    tenant = request.tenant
    agents = list(agent_services.agents_for_members(tenant))
    chosen = next((a for a in agents if a.slug == request.GET.get("agent", "")), None)
    admin = policy.can_administer(request.membership.role)
    store_unavailable = False
    try:
        in_agentcore = services.agentcore_memories(tenant, request.user)
    except stores.StoreUnavailable as exc:
        log.warning("memory page for tenant %s: AgentCore Memory unavailable: %s", tenant.pk, exc)
        in_agentcore, store_unavailable = None, True
    agentcore = in_agentcore is not None or store_unavailable
    if agentcore:
        mine, shared = _from_agentcore(in_agentcore.memories if in_agentcore else [], agents, chosen)
    else:
        mine = list(services.own_memories(request.user, chosen).order_by("-created_at", "-id")[:500])
        shared = list(services.shared_memories().order_by("-created_at", "-id")[:500])
    groups: dict[str, list] = {}
    for record in mine:
        label = record.agent.name if record.agent is not None else "All agents"
        groups.setdefault(label, []).append(record)
    context = {
        "entitled": services.entitled(tenant),
        "agents": agents,
        "chosen": chosen,
        "groups": sorted(groups.items()),
        "total": len(mine),
        "admin": admin,
        "shared": shared,
        "agentcore": agentcore,
        "memory_id": tenant.bindings.memory_id if agentcore else "",
        # Bound to AgentCore Memory, but on embedded defaults: this page lists the local table.
        "unused_memory_id": "" if agentcore else services.unused_memory_binding(tenant),
        "store_unavailable": store_unavailable,
        # AgentCore holds more of a kind than the page lists (stores.LIST_CAP each).
        "truncated": bool(in_agentcore and in_agentcore.truncated),
        "list_cap": stores.LIST_CAP,
        "shared_form": shared_form or SharedMemoryForm(),
        "member_counts": _member_counts(request) if admin else [],
        "member_cap": stores.MEMBER_CAP,
        # What the operator must fix, for those who can ask them: agents that never use memory.
        "agents_without_memory": _agents_without_memory(agents) if admin else [],
    }
    return render(request, "memory/home.html", context, status=status)


def _member_counts(request) -> list[dict]:
    """Each member's count. On AgentCore Memory a count is a ListMemoryRecords walk per member,
    so none is fetched unless asked: ?count=<membership id> counts that one member."""
    rows = services.counts_per_member()
    asked = request.GET.get("count", "")
    row = next((r for r in rows if r["count"] is None and str(r["membership"].pk) == asked), None)
    if row is not None:
        try:
            row["count"], row["more"] = services.count_member_memory(Actor.from_request(request), row["membership"])
        except ServiceError as exc:
            messages.error(request, exc.text)
    return rows


@dataclass(frozen=True)
class _Listed:
    """An AgentCore record shaped like a MemoryRecord for the template (pk: AgentCore's record id)."""

    pk: str
    content: str
    agent: object | None
    created_at: object | None


def _from_agentcore(listed, agents, chosen) -> tuple[list, list]:
    by_slug = {agent.slug: agent for agent in agents}
    mine, shared = [], []
    for memory in listed:
        if memory.namespace.shared:
            shared.append(_Listed(memory.id, memory.content, None, memory.created_at))
            continue
        agent = by_slug.get(memory.namespace.agent_slug) if memory.namespace.agent_slug else None
        if chosen is not None and (agent is None or agent.pk != chosen.pk):
            continue
        mine.append(_Listed(memory.id, memory.content, agent, memory.created_at))
    return mine, shared


def _agents_without_memory(agents) -> list[dict]:
    prefetch_related_objects(agents, "identity")
    rows = [{"agent": agent, "missing": services.scopes_agent_lacks_for_memory(agent)} for agent in agents]
    return [row for row in rows if row["missing"]]


def _home_url(request, anchor: str = "") -> str:
    return reverse("memory:home", kwargs={"tenant_slug": request.tenant.slug}) + anchor


@require_POST
@tenant_view(Action.USE_AGENTS)
def delete(request, record_id):
    try:
        deleted = services.delete_own_memory(Actor.from_request(request), record_id)
    except ServiceError as exc:
        messages.error(request, exc.text)
        return redirect(_home_url(request))
    if not deleted:
        raise Http404("No such memory")
    messages.success(request, "The memory was deleted; agents no longer recall it.")
    return redirect(_home_url(request))


@require_POST
@tenant_view(Action.USE_AGENTS)
def clear(request, membership_id):
    if not policy.can_administer(request.membership.role):
        raise PermissionDenied("Only an owner or admin may clear a member's memory.")
    membership = access_membership(membership_id)
    try:
        cleared = services.clear_member_memory(Actor.from_request(request), membership)
    except ServiceError as exc:
        messages.error(request, exc.text)
        return redirect(_home_url(request, "#member-memory"))
    text = services.cleared_message(cleared, membership.user.email)
    (messages.warning if cleared.failed or cleared.more else messages.success)(request, text)
    return redirect(_home_url(request, "#member-memory"))


@require_POST
@tenant_view(Action.USE_AGENTS)
def shared_add(request):
    if not policy.can_administer(request.membership.role):
        raise PermissionDenied("Only an owner or admin may change the tenant's shared memory.")
    form = SharedMemoryForm(request.POST)
    if form.is_valid():
        try:
            services.add_shared_memory(Actor.from_request(request), form.cleaned_data["content"])
        except ServiceError as exc:
            form.add_error("content", exc.text)
        else:
            messages.success(request, "Shared memory kept: every agent recalls it for everyone here.")
            return redirect(_home_url(request, "#shared-memory"))
    return _home(request, shared_form=form, status=400)


@require_POST
@tenant_view(Action.USE_AGENTS)
def shared_delete(request, record_id):
    if not policy.can_administer(request.membership.role):
        raise PermissionDenied("Only an owner or admin may change the tenant's shared memory.")
    try:
        deleted = services.delete_shared_memory(Actor.from_request(request), record_id)
    except ServiceError as exc:
        messages.error(request, exc.text)
        return redirect(_home_url(request, "#shared-memory"))
    if not deleted:
        raise Http404("No such shared memory")
    messages.success(request, "The shared memory was deleted; agents no longer recall it.")
    return redirect(_home_url(request, "#shared-memory"))

"""The Memory page: a member sees and deletes their own memories (per agent); owners and
admins also see how many memories each member has (never their contents) and may clear
a member's memory. Both deletions are audited (services)."""

from __future__ import annotations

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import prefetch_related_objects
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from agents.memory import policy, services
from tenants.access import access_membership, int_or_404
from tenants.roles import Action
from tenants.services import Actor
from tenants.views import tenant_view


@tenant_view(Action.USE_AGENTS)
def home(request):
    from agents import services as agent_services

    agents = list(agent_services.agents_for_members(request.tenant))
    chosen = next((a for a in agents if a.slug == request.GET.get("agent", "")), None)
    mine = list(services.own_memories(request.user, chosen).order_by("-created_at", "-id")[:500])
    groups: dict[str, list] = {}
    for record in mine:
        label = record.agent.name if record.agent is not None else "All agents"
        groups.setdefault(label, []).append(record)
    admin = policy.can_administer(request.membership.role)
    context = {
        "entitled": services.entitled(request.tenant),
        "agents": agents,
        "chosen": chosen,
        "groups": sorted(groups.items()),
        "total": len(mine),
        "admin": admin,
        "member_counts": services.counts_per_member() if admin else [],
        # What the operator must fix, for those who can ask them: agents that never use memory.
        "agents_without_memory": _agents_without_memory(agents) if admin else [],
    }
    return render(request, "memory/home.html", context)


def _agents_without_memory(agents) -> list[dict]:
    prefetch_related_objects(agents, "identity")
    rows = [{"agent": agent, "missing": services.scopes_agent_lacks_for_memory(agent)} for agent in agents]
    return [row for row in rows if row["missing"]]


@require_POST
@tenant_view(Action.USE_AGENTS)
def delete(request, record_id):
    if services.delete_own_memory(Actor.from_request(request), int_or_404(record_id)):
        messages.success(request, "The memory was deleted; agents no longer recall it.")
    else:
        raise Http404("No such memory")
    return redirect("memory:home", tenant_slug=request.tenant.slug)


@require_POST
@tenant_view(Action.USE_AGENTS)
def clear(request, membership_id):
    if not policy.can_administer(request.membership.role):
        raise PermissionDenied("Only an owner or admin may clear a member's memory.")
    membership = access_membership(membership_id)
    deleted = services.clear_member_memory(Actor.from_request(request), membership)
    messages.success(request, f"{deleted} memor{'y' if deleted == 1 else 'ies'} of {membership.user.email} cleared.")
    return redirect("memory:home", tenant_slug=request.tenant.slug)

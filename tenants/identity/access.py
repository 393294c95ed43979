"""Access helpers for machine identities named in a URL: 404 for missing and foreign alike."""

from __future__ import annotations

from django.db.models import Q
from django.http import Http404

from tenants.access import int_or_404
from tenants.context import require_tenant
from tenants.identity.models import AgentIdentity, ApiClient, with_owner_role


def access_api_client(client_id) -> ApiClient:
    """One of the current tenant's API clients (the scoped manager sees no other), with its
    owner's role (`is_paused`, `pause_reason`)."""
    clients = with_owner_role(ApiClient.objects.select_related("created_by", "owner"))
    client = clients.filter(pk=int_or_404(client_id)).first()
    if client is None:
        raise Http404("No such API client")
    return client


def visible_agent_identities():
    """What the current tenant may see: active shared agents and all of its own.

    AgentIdentity is platform data (no tenant manager), so the filter is spelled
    out here, matching services.visible_agents_for_tenant.
    """
    tenant = require_tenant()
    return AgentIdentity.objects.filter(Q(owner_tenant__isnull=True, disabled_at__isnull=True) | Q(owner_tenant=tenant))


def access_agent_identity(agent_id) -> AgentIdentity:
    agent = visible_agent_identities().filter(pk=int_or_404(agent_id)).first()
    if agent is None:
        raise Http404("No such agent")
    return agent


def access_own_agent_identity(agent_id) -> AgentIdentity:
    """An agent the current tenant owns (shared agents are the operator's to rotate)."""
    agent = AgentIdentity.objects.filter(pk=int_or_404(agent_id), owner_tenant=require_tenant()).first()
    if agent is None:
        raise Http404("No such agent")
    return agent

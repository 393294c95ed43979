"""Tool screens: the tenant admin's choice per agent, and the operator's registry.

* `/t/<slug>/tools/`: which tools each of the tenant's agents may call (the tools
  its tier allows); changing it needs MANAGE_AGENTS (owner, admin).
* `/operator/tools/`: the registry, staff only (operator_view), changes audited.
"""

from __future__ import annotations

from django.contrib import messages
from django.db.models import prefetch_related_objects
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from agents.tools import services
from agents.tools.forms import ToolForm
from agents.tools.models import AgentTool, Tool, ToolStatus
from portal.operator.listing import field_filter, list_context
from portal.operator.views import operator_view
from tenants.access import int_or_404
from tenants.audit import client_ip
from tenants.roles import Action
from tenants.services import Actor, ServiceError
from tenants.views import tenant_view


def _agents(tenant):
    from agents import services as agent_services

    agents = agent_services.agents_for_members(tenant)
    prefetch_related_objects(agents, "identity")  # one query for the identities' scopes
    return agents


@tenant_view(Action.MANAGE_AGENTS)
def home(request):
    tenant = request.tenant
    tools = list(services.tier_tools(tenant))
    enabled: dict[int, set[int]] = {}
    for agent_id, tool_id in AgentTool.objects.values_list("agent_id", "tool_id"):
        enabled.setdefault(agent_id, set()).add(tool_id)
    rows = [
        {
            "agent": agent,
            "enabled": enabled.get(agent.pk, set()),
            "cannot_call_tools": services.why_agent_cannot_call_tools(agent),
        }
        for agent in _agents(tenant)
    ]
    context = {"tools": tools, "rows": rows, "scope": services.SCOPE, "gateway": services.served_by_gateway(tenant)}
    return render(request, "tools/home.html", context)


@require_POST
@tenant_view(Action.MANAGE_AGENTS)
def agent_tools(request, agent_id):
    agent_pk = int_or_404(agent_id)
    agent = next((a for a in _agents(request.tenant) if a.pk == agent_pk), None)
    if agent is None:
        raise Http404("No such agent")
    chosen = [int(v) for v in request.POST.getlist("tools") if v.isascii() and v.isdigit() and len(v) < 19]
    try:
        tools = services.set_agent_tools(Actor.from_request(request), agent, chosen)
    except ServiceError as exc:
        messages.error(request, exc.text)
    else:
        names = ", ".join(tool.name for tool in tools) or "no tools"
        messages.success(request, f"{agent.name} now uses {names}.")
    return redirect(reverse("tools:home", kwargs={"tenant_slug": request.tenant.slug}) + f"#agent-{agent.pk}")


# --- operator -------------------------------------------------------------------------------


@operator_view
def operator_tools(request):
    filters = [field_filter("status", "Status", ToolStatus.choices)]
    tools = Tool.objects.prefetch_related("tiers").order_by("name", "pk")
    context, status = list_context(request, tools, search=("name", "key"), filters=filters)
    return render(request, "tools/operator.html", context, status=status)


def _tool_form(request, tool: Tool | None):
    form = ToolForm(request.POST if request.method == "POST" else None, instance=tool)
    if request.method == "POST" and form.is_valid():
        try:
            saved = services.save_tool(
                request.user, form.save(commit=False), tiers=form.cleaned_data["tiers"], ip=client_ip(request)
            )
        except ServiceError as exc:
            form.add_error(None, exc.text)
        else:
            messages.success(request, f"Tool “{saved.name}” saved.")
            return redirect("tools_operator:tools")
    status = 400 if form.is_bound else 200
    return render(request, "tools/operator_form.html", {"form": form, "tool": tool}, status=status)


@operator_view
def operator_tool_create(request):
    return _tool_form(request, None)


@operator_view
def operator_tool_edit(request, key):
    tool = Tool.objects.filter(key=key).first() if isinstance(key, str) else None
    if tool is None:
        raise Http404
    return _tool_form(request, tool)

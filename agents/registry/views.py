"""Registry screens: the tenant's catalogue and own agents, and the operators' shared agents.

* `/t/<slug>/catalogue/`: the agents a member may chat with (search by name or
  description, a Chat button); admins (MANAGE_AGENTS) also see the agents the tier
  offers that are not enabled yet, and the tenant's own agents with their reviews.
* `/t/<slug>/catalogue/own/…`: a tenant's own agents, their versions and reviews
  (MANAGE_AGENTS; members get 403).
* `/operator/agents/…`: shared agents, staff only (operator_view).

Both sides share the handlers below through a `Place`: where the agent is looked up,
who acts, which URLs and templates. The rules live in services.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from agents import services as agent_services
from agents.models import Agent, AgentStatus
from agents.registry import services
from agents.registry.forms import RejectForm, VersionForm
from agents.registry.models import VersionState
from portal.operator.listing import field_filter, list_context
from portal.operator.views import operator_view
from tenants.access import int_or_404
from tenants.models import Tier
from tenants.roles import Action, can
from tenants.services import Actor, ServiceError
from tenants.views import tenant_view


@dataclass
class Place:
    """One side of the registry: the operator console or a tenant's screens."""

    request: Any
    tenant: Any  # None: the operator console (shared agents)

    @property
    def operator(self) -> bool:
        return self.tenant is None

    @property
    def actor(self) -> Actor | None:
        return None if self.operator else Actor.from_request(self.request)

    def agent_or_404(self, agent_id) -> Agent:
        agent_pk = int_or_404(agent_id)
        if self.operator:
            agent = services.access_shared_agent(agent_pk)
        else:
            agent = services.access_own_agent(self.tenant, agent_pk)
        if agent is None:
            raise Http404("No such agent")
        return agent

    def url(self, name: str, **kwargs) -> str:
        if self.operator:
            return reverse(f"registry_operator:{name}", kwargs=kwargs)
        return reverse(f"registry:{name}", kwargs={"tenant_slug": self.tenant.slug, **kwargs})

    def template(self, name: str) -> str:
        return f"registry/{'operator_' if self.operator else ''}{name}.html"

    def models(self):
        return services.model_choices(self.tenant)

    def tiers(self):
        return list(Tier.objects.order_by("name")) if self.operator else None

    def form(self, *, new_agent=False, initial_version=None) -> VersionForm:
        data = self.request.POST if self.request.method == "POST" else None
        return VersionForm(
            data, models=self.models(), tiers=self.tiers(), new_agent=new_agent, initial_version=initial_version
        )


def _operator_place(request) -> Place:
    return Place(request, None)


def _tenant_place(request) -> Place:
    return Place(request, request.tenant)


# --- shared handlers --------------------------------------------------------------------------


def _agent_new(place: Place):
    form = place.form(new_agent=True)
    if place.request.method == "POST" and form.is_valid():
        try:
            agent, version = services.create_agent(
                place.request.user,
                form.draft(),
                slug=form.cleaned_data.get("slug", ""),
                actor=place.actor,
                tenant=place.tenant,
            )
        except ServiceError as exc:
            form.add_service_error(exc)
        else:
            messages.success(place.request, f"{agent.name} drafted as version 1. Submit it for review to publish it.")
            return redirect(place.url("agent", agent_id=agent.pk))
    status = 400 if form.is_bound else 200
    back_url = place.url("agents") if place.operator else place.url("catalogue")
    context = {"form": form, "agent": None, "place": place, "back_url": back_url}
    return render(place.request, place.template("version_form"), context, status=status)


def _agent_detail(place: Place, agent_id):
    agent = place.agent_or_404(agent_id)
    versions = list(services.versions_of(agent))
    live = services.live_version(agent, versions)
    chosen = None
    raw = place.request.GET.get("compare", "")
    if raw.isascii() and raw.isdigit() and len(raw) < 10:
        chosen = next((v for v in versions if v.number == int(raw)), None)
    if chosen is None:
        # The newest version that is not the live one: usually what waits for a review.
        chosen = next((v for v in versions if v.number != agent.published_version), None)
    diff = []
    if chosen is not None:
        diff = services.instructions_diff(
            # A draft agent's row holds its first draft, which is not live: compare with nothing.
            live.instructions if live else ("" if agent.status == AgentStatus.DRAFT else agent.instructions),
            chosen.instructions,
            old_label=f"live (v{live.number})" if live else "live",
            new_label=f"v{chosen.number}",
        )
    rows = [
        {
            "version": v,
            "live": v.number == agent.published_version,
            "mine": v.author_id == place.request.user.pk,
            "urls": {
                verb: place.url(f"version_{verb}", agent_id=agent.pk, number=v.number)
                for verb in ("submit", "approve", "reject", "roll_back")
            },
        }
        for v in versions
    ]
    context = {
        "agent": agent,
        "rows": rows,
        "versions": versions,
        "new_version_url": place.url("version_new", agent_id=agent.pk),
        "agent_url": place.url("agent", agent_id=agent.pk),
        "back_url": place.url("agents") if place.operator else place.url("catalogue"),
        "live": live,
        "chosen": chosen,
        "diff": diff,
        "place": place,
        "reject_form": RejectForm(),
        "states": VersionState,
        "user_id": place.request.user.pk,
    }
    return render(place.request, place.template("agent"), context)


def _version_new(place: Place, agent_id):
    agent = place.agent_or_404(agent_id)
    versions = list(services.versions_of(agent))
    form = place.form(initial_version=versions[0] if versions else None)
    if place.request.method == "POST" and form.is_valid():
        try:
            version = services.create_version(place.request.user, agent, form.draft(), actor=place.actor)
        except ServiceError as exc:
            form.add_service_error(exc)
        else:
            messages.success(place.request, f"Version {version.number} drafted. Submit it for review to publish it.")
            return redirect(place.url("agent", agent_id=agent.pk) + f"?compare={version.number}")
    status = 400 if form.is_bound else 200
    context = {"form": form, "agent": agent, "place": place, "back_url": place.url("agent", agent_id=agent.pk)}
    return render(place.request, place.template("version_form"), context, status=status)


def _transition(place: Place, agent_id, number, verb: str):
    agent = place.agent_or_404(agent_id)
    version = services.access_version(agent, int_or_404(number))
    if version is None:
        raise Http404("No such version")
    user, actor = place.request.user, place.actor
    try:
        if verb == "submit":
            services.submit(user, version, actor=actor)
            text = f"Version {version.number} is waiting for a review."
        elif verb == "approve":
            services.approve(user, version, actor=actor)
            text = f"Version {version.number} is published: the next turns use it."
        elif verb == "reject":
            form = RejectForm(place.request.POST)
            if not form.is_valid():
                raise ServiceError("Say why the version is rejected.")
            services.reject(user, version, form.cleaned_data["reason"], actor=actor)
            text = f"Version {version.number} rejected."
        else:
            copy = services.roll_back(user, version, actor=actor)
            text = f"Version {copy.number} (a copy of version {version.number}) is waiting for a review."
    except (ServiceError, PermissionDenied) as exc:
        messages.error(place.request, exc.text if isinstance(exc, ServiceError) else str(exc))
    else:
        messages.success(place.request, text)
    return redirect(place.url("agent", agent_id=agent.pk) + f"?compare={version.number}")


# --- tenant -------------------------------------------------------------------------------------


@tenant_view(Action.USE_AGENTS)
def catalogue(request):
    tenant = request.tenant
    query = request.GET.get("q", "")[:100]
    available = agent_services.agents_for_members(tenant)
    rows = []
    for agent in services.search_catalogue(available, query):
        try:
            model = agent_services.route_model(agent, tenant).offering
        except ServiceError:
            model = None
        rows.append({"agent": agent, "model": model})
    context: dict[str, Any] = {"rows": rows, "query": query, "manage": False}
    if can(request.membership.role, Action.MANAGE_AGENTS):
        enabled = {agent.pk for agent in available}
        offered = Agent.objects.filter(status=AgentStatus.PUBLISHED, owner_tenant__isnull=True).select_related("model")
        context["manage"] = True
        context["not_enabled"] = [
            a
            for a in services.search_catalogue(offered, query)
            if a.pk not in enabled and tenant.tier.slug in (a.offered_to_tiers or [])
        ]
        own = list(services.own_agents(tenant).order_by("name"))
        pending = services.pending_reviews(own)
        context["own"] = [{"agent": agent, "pending": pending.get(agent.pk, 0)} for agent in own]
    return render(request, "registry/catalogue.html", context)


@tenant_view(Action.MANAGE_AGENTS)
def own_agent_new(request):
    return _agent_new(_tenant_place(request))


@tenant_view(Action.MANAGE_AGENTS)
def own_agent(request, agent_id):
    return _agent_detail(_tenant_place(request), agent_id)


@tenant_view(Action.MANAGE_AGENTS)
def own_version_new(request, agent_id):
    return _version_new(_tenant_place(request), agent_id)


def _tenant_transition(verb):
    @require_POST
    @tenant_view(Action.MANAGE_AGENTS)
    def view(request, agent_id, number):
        return _transition(_tenant_place(request), agent_id, number, verb)

    view.__name__ = f"own_version_{verb}"
    return view


own_version_submit = _tenant_transition("submit")
own_version_approve = _tenant_transition("approve")
own_version_reject = _tenant_transition("reject")
own_version_roll_back = _tenant_transition("roll_back")


# --- operator -----------------------------------------------------------------------------------


@operator_view
def operator_agents(request):
    # Shared agents only: a tenant's own agents are its admins' business (and not listed, so not audited).
    filters = [field_filter("status", "Status", AgentStatus.choices)]
    context, status = list_context(
        request, services.shared_agents().order_by("name", "pk"), search=("name", "slug"), filters=filters
    )
    agents = list(context["page"])
    pending = services.pending_reviews(agents)
    context["rows"] = [{"agent": agent, "pending": pending.get(agent.pk, 0)} for agent in agents]
    context["pending_total"] = services.shared_pending_total()
    return render(request, "registry/operator_agents.html", context, status=status)


@operator_view
def operator_agent_new(request):
    return _agent_new(_operator_place(request))


@operator_view
def operator_agent(request, agent_id):
    return _agent_detail(_operator_place(request), agent_id)


@operator_view
def operator_version_new(request, agent_id):
    return _version_new(_operator_place(request), agent_id)


def _operator_transition(verb):
    @require_POST
    @operator_view
    def view(request, agent_id, number):
        return _transition(_operator_place(request), agent_id, number, verb)

    view.__name__ = f"operator_version_{verb}"
    return view


operator_version_submit = _operator_transition("submit")
operator_version_approve = _operator_transition("approve")
operator_version_reject = _operator_transition("reject")
operator_version_roll_back = _operator_transition("roll_back")

"""Skill screens: a tenant's skills and each agent's choice, and the operator's shared skills.

* `/t/<slug>/skills/`: the shared skills of the tenant's tier, the tenant's own skills
  and which skills each agent uses; every member may look (USE_AGENTS), changes need
  MANAGE_AGENTS (owner, admin).
* `/operator/skills/`: the shared skills, staff only (operator_view), changes audited.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from agents.skills import services
from agents.skills.forms import OperatorSkillForm, TenantSkillForm
from agents.skills.models import AgentSkill, Skill, SkillStatus
from portal.operator.listing import field_filter, list_context
from portal.operator.views import operator_view
from tenants.access import int_or_404
from tenants.roles import Action, can
from tenants.services import Actor, ServiceError
from tenants.views import tenant_view


def _agents(tenant):
    from agents import services as agent_services

    return agent_services.agents_for_members(tenant)


def _home_url(tenant) -> str:
    return reverse("skills:home", kwargs={"tenant_slug": tenant.slug})


@tenant_view(Action.USE_AGENTS)
def home(request):
    tenant = request.tenant
    shared = services.tier_shared_skills(tenant)
    own = services.own_skills(tenant)
    usable = list(services.usable_skills(tenant).values())
    enabled: dict[int, set[int]] = {}
    for agent_id, skill_id in AgentSkill.objects.values_list("agent_id", "skill_id"):
        enabled.setdefault(agent_id, set()).add(skill_id)
    rows = [
        {
            "agent": agent,
            "enabled": enabled.get(agent.pk, set()),
            "names": [s.name for s in usable if s.pk in enabled.get(agent.pk, set())],
        }
        for agent in _agents(tenant)
    ]
    context = {
        "shared": shared,
        "own": own,
        "usable": sorted(usable, key=lambda s: s.name),
        "rows": rows,
        "may_manage": can(request.membership.role, Action.MANAGE_AGENTS),
    }
    return render(request, "skills/home.html", context)


def _own_skill_form(request, skill: Skill):
    tenant = request.tenant
    form = TenantSkillForm(
        request.POST if request.method == "POST" else None,
        instance=skill,
        shared_skills=services.tier_shared_skills(tenant),
    )
    if request.method == "POST" and form.is_valid():
        try:
            saved = services.save_skill(Actor.from_request(request), form.save(commit=False))
        except ServiceError as exc:
            form.add_error(None, exc.text)
        else:
            messages.success(request, f"Skill “{saved.name}” saved.")
            return redirect(_home_url(tenant) + "#own")
    status = 400 if form.is_bound else 200
    return render(request, "skills/form.html", {"form": form, "skill": skill if skill.pk else None}, status=status)


@tenant_view(Action.MANAGE_AGENTS)
def skill_create(request):
    return _own_skill_form(request, Skill(owner_tenant=request.tenant))


@tenant_view(Action.MANAGE_AGENTS)
def skill_edit(request, skill_id):
    skill = Skill.objects.filter(pk=int_or_404(skill_id), owner_tenant=request.tenant).first()
    if skill is None:
        raise Http404("No such skill")
    return _own_skill_form(request, skill)


@require_POST
@tenant_view(Action.MANAGE_AGENTS)
def agent_skills(request, agent_id):
    agent_pk = int_or_404(agent_id)
    agent = next((a for a in _agents(request.tenant) if a.pk == agent_pk), None)
    if agent is None:
        raise Http404("No such agent")
    chosen = [int(v) for v in request.POST.getlist("skills") if v.isascii() and v.isdigit() and len(v) < 19]
    try:
        skills = services.set_agent_skills(Actor.from_request(request), agent, chosen)
    except ServiceError as exc:
        messages.error(request, exc.text)
    else:
        names = ", ".join(skill.name for skill in skills) or "no skills"
        messages.success(request, f"{agent.name} now follows {names}.")
    return redirect(_home_url(request.tenant) + f"#agent-{agent.pk}")


# --- operator -------------------------------------------------------------------------------


@operator_view
def operator_skills(request):
    # Shared skills only: a tenant's own skills are not listed here (so not audited either).
    filters = [field_filter("status", "Status", SkillStatus.choices)]
    skills = Skill.unscoped.filter(owner_tenant__isnull=True).order_by("name", "pk")
    context, status = list_context(request, skills, search=("name", "key"), filters=filters)
    return render(request, "skills/operator.html", context, status=status)


def _shared_skill_form(request, skill: Skill | None):
    form = OperatorSkillForm(request.POST if request.method == "POST" else None, instance=skill)
    if request.method == "POST" and form.is_valid():
        try:
            saved = services.save_skill(Actor.from_request(request), form.save(commit=False))
        except ServiceError as exc:
            form.add_error(None, exc.text)
        else:
            messages.success(request, f"Skill “{saved.name}” saved.")
            return redirect("skills_operator:skills")
    status = 400 if form.is_bound else 200
    return render(request, "skills/operator_form.html", {"form": form, "skill": skill}, status=status)


@operator_view
def operator_skill_create(request):
    return _shared_skill_form(request, None)


@operator_view
def operator_skill_edit(request, key):
    skill = Skill.unscoped.filter(owner_tenant__isnull=True, key=key).first() if isinstance(key, str) else None
    if skill is None:
        raise Http404
    return _shared_skill_form(request, skill)

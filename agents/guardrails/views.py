"""Guardrail screens: the tenant admin page (policy, metrics, try-it console, events) and the operator's.

Views are thin: parse → access → service → render."""

from __future__ import annotations

import json

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from agents.guardrails import policy, services
from agents.guardrails.detectors import ENTITIES
from agents.guardrails.forms import OverrideForm, TierPolicyForm, TryForm
from agents.guardrails.models import Category, GuardrailEvent, GuardrailPolicy, Stage
from billing.accounting import rollup_totals, turns_by_tenant
from portal.operator.views import audited_read, operator_view
from tenants.access import int_or_404
from tenants.models import Tenant, Tier
from tenants.roles import Action, can
from tenants.services import Actor, ServiceError
from tenants.views import tenant_view

STATS_DAYS = 14


def _policy_rows(effective) -> list[dict]:
    """Each entity's effective action, where it comes from, and the tier's value."""
    floor = policy.preset_floor(effective.config["presets"])
    tier_entities = policy.merge(effective.tier_config, None)["entities"]
    rows = []
    for key, label in ENTITIES.items():
        action = effective.config["entities"][key]
        if key in effective.override.get("entities", {}) and effective.override["entities"][key] == action:
            source = "tenant"
        elif floor.get(key) == action and tier_entities[key] != action:
            source = "preset"
        else:
            source = "tier"
        rows.append({"key": key, "label": label, "action": action, "source": source, "tier": tier_entities[key]})
    return rows


def _page_context(request, form=None, try_form=None, try_result=None) -> dict:
    tenant = request.tenant
    effective = services.effective_policy(tenant)
    may_manage = can(request.membership.role, Action.MANAGE_GUARDRAILS)
    if form is None and effective.may_override:
        form = OverrideForm(
            initial=OverrideForm.initial_from(effective.override),
            tier_defaults=policy.merge(effective.tier_config, None),
        )
    # Every turn of the period, as metered (one usage event per turn, blocked ones too): the
    # same turns the usage dashboard counts, whatever became of their conversations.
    first_day, _since = services.stats_days(STATS_DAYS)
    turns = rollup_totals(day__gte=first_day)["turns"]
    events = GuardrailEvent.objects.select_related("invocation")
    stage, category = request.GET.get("stage", ""), request.GET.get("category", "")
    if stage in Stage.values:
        events = events.filter(stage=stage)
    if category in Category.values:
        events = events.filter(category=category)
    page = Paginator(events, 25).get_page(request.GET.get("page"))
    return {
        "effective": effective,
        "config": effective.config,
        "config_json": json.dumps(effective.config, indent=2),
        "output_block_message": policy.block_message(effective.config, "output"),
        "entity_rows": _policy_rows(effective),
        "presets": policy.PRESETS,
        "form": form,
        "may_manage": may_manage,
        "try_form": try_form or TryForm(initial={"stage": "input"}),
        "try_result": try_result,
        "stats": services.stats(GuardrailEvent.objects.all(), days=STATS_DAYS, turns=turns),
        "page": page,
        "stage_choices": Stage.choices,
        "category_choices": Category.choices,
        "filter_stage": stage,
        "filter_category": category,
        "category_labels": dict(Category.choices),
    }


@tenant_view(Action.VIEW_GUARDRAILS)
def overview(request):
    return render(request, "guardrails/overview.html", _page_context(request))


@require_POST
@tenant_view(Action.MANAGE_GUARDRAILS)
def policy_save(request):
    effective = services.effective_policy(request.tenant)
    if not effective.may_override:
        messages.error(request, "Your tier does not include custom guardrails; the tier defaults apply.")
        return redirect("guardrails:overview", tenant_slug=request.tenant.slug)
    form = OverrideForm(request.POST, tier_defaults=policy.merge(effective.tier_config, None))
    if form.is_valid():
        try:
            services.update_override(Actor.from_request(request), form.to_config())
        except policy.PolicyError as exc:
            form.add_policy_errors(exc.errors)
        except ServiceError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, "Guardrail policy saved. It applies to the next message.")
            return redirect("guardrails:overview", tenant_slug=request.tenant.slug)
    return render(request, "guardrails/overview.html", _page_context(request, form=form), status=400)


@require_POST
@tenant_view(Action.VIEW_GUARDRAILS)
def try_it(request):
    """Run text through the effective policy and show what would happen; nothing is recorded."""
    form = TryForm(request.POST)
    result = None
    if form.is_valid():
        result = services.try_text(request.tenant, form.cleaned_data["text"], form.cleaned_data["stage"])
    context = {"try_form": form, "try_result": result, "category_labels": dict(Category.choices)}
    status = 200 if form.is_valid() else 400
    if request.htmx:
        return render(request, "guardrails/_try.html", context, status=status)
    return render(
        request, "guardrails/overview.html", _page_context(request, try_form=form, try_result=result), status=status
    )


@require_POST
@tenant_view(Action.MANAGE_GUARDRAILS)
def event_false_positive(request, event_id):
    event = GuardrailEvent.objects.filter(pk=int_or_404(event_id)).first()
    if event is None:
        raise Http404
    value = request.POST.get("false_positive", "on") in ("on", "true", "1")
    try:
        services.mark_false_positive(Actor.from_request(request), event, value)
    except ServiceError as exc:
        messages.error(request, str(exc))
    if request.htmx:
        return render(
            request,
            "guardrails/_event_row.html",
            {"event": event, "may_manage": True, "category_labels": dict(Category.choices)},
        )
    return redirect("guardrails:overview", tenant_slug=request.tenant.slug)


# --- operator -------------------------------------------------------------------------------


@operator_view
def operator_overview(request):
    """Every tenant's guardrail activity side by side, and each tier's defaults."""
    # The same period and meanings as the tenant's page (services.stats).
    first_day, since = services.stats_days(STATS_DAYS)
    per_tenant = {
        row["tenant_id"]: row
        for row in GuardrailEvent.unscoped.filter(created_at__gte=since)
        .values("tenant_id")
        .annotate(
            events=Count("id"),
            blocked=Count("invocation", distinct=True, filter=Q(action="block")),
            false_positives=Count("id", filter=Q(false_positive=True)),
            leaks=Count("id", filter=Q(category="cross_tenant")),
            injections=Count("id", filter=Q(category="injection")),
            triggered_turns=Count("invocation", distinct=True),
        )
        .order_by()
    }
    turns = turns_by_tenant(first_day)
    rows = []
    for tenant in Tenant.objects.select_related("tier").order_by("name"):
        stats = per_tenant.get(tenant.pk, {})
        events = stats.get("events", 0)
        rows.append(
            {
                "tenant": tenant,
                "turns": turns.get(tenant.pk, 0),
                "triggered_turns": stats.get("triggered_turns", 0),
                "events": events,
                "blocked": stats.get("blocked", 0),
                "leaks": stats.get("leaks", 0),
                "injections": stats.get("injections", 0),
                "trigger_rate": round(100 * stats.get("triggered_turns", 0) / turns[tenant.pk], 1)
                if turns.get(tenant.pk)
                else None,
                "fp_rate": round(100 * stats.get("false_positives", 0) / events, 1) if events else None,
            }
        )
    policies = dict(GuardrailPolicy.objects.values_list("tier_id", "config"))
    tiers = [
        {"tier": tier, "config": policies.get(tier.pk, {}), "effective": policy.merge(policies.get(tier.pk), None)}
        for tier in Tier.objects.all()
    ]
    context = {
        "rows": rows,
        "tiers": tiers,
        "stats": services.stats(GuardrailEvent.unscoped.all(), days=STATS_DAYS, turns=sum(turns.values())),
        "category_labels": dict(Category.choices),
    }
    return audited_read(request, render(request, "guardrails/operator.html", context), "guardrails")


@operator_view
def operator_tier_policy(request, slug):
    tier = Tier.objects.filter(slug=slug).first() if isinstance(slug, str) else None
    if tier is None:
        raise Http404
    current = GuardrailPolicy.objects.filter(tier=tier).values_list("config", flat=True).first() or {}
    form = TierPolicyForm(
        request.POST if request.method == "POST" else None, initial={"config": json.dumps(current, indent=2)}
    )
    if request.method == "POST" and form.is_valid():
        services.update_tier_policy(request.user, tier, form.cleaned_data["config"], ip=request.META.get("REMOTE_ADDR"))
        messages.success(request, f"Guardrail defaults of {tier.name} saved.")
        return redirect("guardrails_operator:overview")
    context = {
        "tier": tier,
        "form": form,
        "effective_json": json.dumps(policy.merge(current, None), indent=2),
        "presets": policy.PRESETS,
        "entities": ENTITIES,
    }
    return render(request, "guardrails/operator_tier.html", context, status=400 if form.is_bound else 200)

"""The tenant admin's limits page: month-to-date quota and bill against the budget, the
tier's rate limits, the monthly budget with its soft alert, per-person limits and the
most recent refusals. Viewing needs billing.view; changing needs billing.limits.

Money here is what the tenant is billed (billing.spend: plan fee + token overage),
never the price book's cost of its usage, which only operators see."""

from __future__ import annotations

from decimal import Decimal

from django import forms
from django.contrib import messages
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from billing import accounting, limits, spend
from billing.dashboards import Gauge
from billing.models import LimitKind, TenantBudget, ThrottleEvent, UserLimit
from tenants.access import int_or_404
from tenants.models import Membership
from tenants.roles import Action, Role, can
from tenants.services import Actor, ServiceError
from tenants.views import tenant_view


class BudgetForm(forms.Form):
    monthly_budget = forms.DecimalField(
        label="Monthly budget (USD)",
        required=False,
        min_value=Decimal("0"),
        max_digits=14,
        decimal_places=2,
        help_text=(
            "A ceiling on each month's bill (your plan's monthly fee plus token overage), so at least the "
            "fee: turns stop when the tokens used, with answers in progress, would take the bill past it. "
            "Empty: no budget."
        ),
        widget=forms.NumberInput(attrs={"step": "0.01", "inputmode": "decimal", "placeholder": "No budget"}),
    )
    soft_alert_percent = forms.IntegerField(
        label="Alert admins at (%)",
        min_value=1,
        max_value=100,
        initial=80,
        help_text=(
            "Once a month, an entry in the audit log when token overage has used this share of what the "
            "budget leaves above your plan's monthly fee (the fee is owed from day one, so it never "
            "raises the alert on its own)."
        ),
    )

    def __init__(self, *args, tenant, **kwargs):
        # The lowest budget is the plan's full monthly fee (spend.lowest_budget): it recurs.
        super().__init__(*args, **kwargs)
        self.tenant = tenant
        self.fields["monthly_budget"].widget.attrs["min"] = f"{spend.lowest_budget(tenant):.2f}"

    def clean_monthly_budget(self):
        budget = self.cleaned_data.get("monthly_budget")
        problem = spend.check_tenant_budget(self.tenant, budget)
        if problem:
            raise forms.ValidationError(problem, code="below_fee")
        return budget


class UserLimitForm(forms.Form):
    # Labelled with the limits' names (LimitKind): a person's limit is called what the organisation's is.
    requests_per_minute = forms.IntegerField(
        label=LimitKind.RPM.limit_name, required=False, min_value=1, max_value=1_000_000
    )
    tokens_per_month = forms.IntegerField(
        label=LimitKind.QUOTA.limit_name, required=False, min_value=1, max_value=10**15
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The inputs sit in table cells; they belong to the row's form by its id.
        for field in self.fields.values():
            field.widget.attrs["form"] = f"limit-{self.prefix[1:]}"
            field.widget.attrs["placeholder"] = "—"


def _context(request, budget_form=None, user_forms=None) -> dict:
    tenant = request.tenant
    budget = TenantBudget.objects.first()
    month = spend.month_spend(tenant)
    user_limits = {row.user_id: row for row in UserLimit.objects.all()}
    memberships = list(Membership.objects.select_related("user").order_by("user__email"))
    user_forms = user_forms or {}
    role = request.membership.role
    can_manage = can(role, Action.MANAGE_LIMITS)
    rows = []
    for membership in memberships:
        limit = user_limits.get(membership.user_id)
        form = user_forms.get(membership.pk) or UserLimitForm(
            prefix=f"m{membership.pk}",
            initial={
                "requests_per_minute": limit.requests_per_minute if limit else None,
                "tokens_per_month": limit.tokens_per_month if limit else None,
            },
        )
        # Same rule as the members page (and limits.set_user_limit): only owners change owners.
        may_edit = can_manage and (membership.role != Role.OWNER or can(role, Action.MANAGE_OWNERS))
        rows.append({"membership": membership, "limit": limit, "form": form, "may_edit": may_edit})
    budget_gauge = None
    if month.monthly_budget is not None:
        budget_gauge = Gauge(
            used=month.bill.total,
            limit=month.monthly_budget,
            forecast=month.bill.total,
            alert_percent=month.soft_alert_percent,
            reached=month.budget_reached,
            alerting=month.alert_reached,
        )
    tier = tenant.tier
    # This month's plan: prorated when the tenant was onboarded or moved during it, so the
    # lowest budget is the fee the month really bills and its quota the tokens it includes.
    plan = spend.month_plan(tenant)
    included = int(plan.included_tokens) if tier is not None else 0
    fee = spend.monthly_fee(plan)
    plan_rule = spend.budget_rule(plan, fee)
    tokens_per_dollar = None
    if plan_rule == spend.BudgetRule.CAPS_OVERAGE:
        tokens_per_dollar = spend.budget_token_ceiling(plan, fee + 1) - spend.budget_token_ceiling(plan, fee)
    return {
        "tier": tier,
        "month": month,
        "included_tokens": included,
        "overage_allowed": tier.overage_allowed if tier is not None else True,
        "monthly_fee": fee,
        "fee_prorated": isinstance(plan, spend.MonthPlan),
        "full_fee": spend.monthly_fee(tier),
        "lowest_budget": spend.lowest_budget(tenant),
        # A budget this month's prorated fee fits in, but not the plan's fee: next month's stop.
        "below_fee_next": spend.below_fee_from_next_month(tenant, budget.monthly_budget if budget else None),
        # How any budget (at least the fee) bears on this plan, for the note under the form.
        "plan_rule": plan_rule,
        "tokens_per_dollar": tokens_per_dollar,
        "next_month": accounting.next_month(month.month),
        "budget": budget,
        "spend_percent": month.budget_percent,
        "budget_gauge": budget_gauge,
        "quota_percent": 100.0 * month.tokens_used / included if included else None,
        "reserved_tokens": month.tokens_reserved,
        "budget_form": budget_form
        or BudgetForm(
            tenant=tenant,
            initial={
                "monthly_budget": budget.monthly_budget if budget else None,
                "soft_alert_percent": budget.soft_alert_percent if budget else 80,
            },
        ),
        "rows": rows,
        "throttles": list(ThrottleEvent.objects.order_by("-created_at")[:20]),
        "can_manage": can_manage,
        "billing_limits_url": request.path,
    }


@tenant_view(Action.VIEW_BILLING)
def limits_page(request):
    return render(request, "billing/limits.html", _context(request))


@require_POST
@tenant_view(Action.MANAGE_LIMITS)
def budget_save(request):
    form = BudgetForm(request.POST, tenant=request.tenant)
    if form.is_valid():
        try:
            limits.set_budget(
                Actor.from_request(request),
                monthly_budget=form.cleaned_data["monthly_budget"],
                soft_alert_percent=form.cleaned_data["soft_alert_percent"],
            )
        except ServiceError as exc:
            form.add_error(None, exc)
        else:
            month = spend.month_spend(request.tenant)
            if month.budget_reached:
                # Saved all the same: a budget at this month's bill is how an admin stops spending now.
                messages.warning(
                    request,
                    f"Budget saved, but this month's bill (${month.bill.total:,.2f}) has already reached it: "
                    "every chat is refused until the budget is raised or the month ends.",
                )
            else:
                messages.success(request, "Budget saved.")
            return redirect("billing:limits", tenant_slug=request.tenant.slug)
    return render(request, "billing/limits.html", _context(request, budget_form=form), status=400)


@require_POST
@tenant_view(Action.MANAGE_LIMITS)
def user_limit_save(request, membership_id):
    membership = get_object_or_404(Membership.objects.select_related("user"), pk=int_or_404(membership_id))
    form = UserLimitForm(request.POST, prefix=f"m{membership.pk}")
    if form.is_valid():
        try:
            limits.set_user_limit(
                Actor.from_request(request),
                membership.user,
                requests_per_minute=form.cleaned_data["requests_per_minute"],
                tokens_per_month=form.cleaned_data["tokens_per_month"],
            )
        except ServiceError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Limits saved for {membership.user.email}.")
            return redirect("billing:limits", tenant_slug=request.tenant.slug)
    return render(request, "billing/limits.html", _context(request, user_forms={membership.pk: form}), status=400)

"""What a tenant spends: its bill, never the provider's cost (ARCHITECTURE.md §7).

The price book prices what a turn costs *us* (tokens, tool calls, runtime seconds):
operators see it, with revenue and margin. What a tenant pays is its invoice: the plan's
monthly fee plus token overage (`billing.invoices.invoice_amounts`, the one formula).
So every tenant-facing figure of money — the dashboard's gauge, the limits page, the
soft alert, the API — is `bill()` of the tokens used, and the monthly budget caps that
bill.

The budget as a token ceiling. The fee is fixed and overage is linear in tokens, so
"fee + overage ≤ budget" is exactly "tokens ≤ ceiling" (`budget_token_ceiling`):

* overage allowed and priced: included tokens + ⌊(budget − fee) × 1000 / price per 1k⌋
  (the floor keeps the ceiling's own bill, rounded half-up to the cent, within budget);
* overage not allowed: the bill cannot pass the fee, so the budget adds nothing to the
  quota (None);
* overage free (price 0): the bill never grows past the fee, so the budget is never
  reached (None);
* a budget below the fee (the forms refuse one; an older row may hold one): the bill
  is past it already, so no more tokens (0).

The soft alert is on the variable part of the bill: it fires when the overage crosses the
alert share of (budget − fee) (`alert_threshold`), never on the fee alone.

Admission enforces the ceiling in the same conditional UPDATE as the quota
(billing.limits), so it holds across processes and under concurrency.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from billing.accounting import CENTS, month_start
from billing.invoices import invoice_amounts


@dataclass(frozen=True)
class _NoPlan:
    """The terms of a tenant with no tier: nothing to pay, no quota."""

    name: str = ""
    monthly_price: Decimal = Decimal("0")
    included_tokens: int = 0
    overage_price_per_1k_tokens: Decimal = Decimal("0")
    overage_allowed: bool = True


def _plan(tier):
    return tier if tier is not None else _NoPlan()


@dataclass(frozen=True)
class Bill:
    """A month's bill for `tokens`: the plan's fee, the token overage and their sum."""

    tokens: int
    fee: Decimal
    overage: Decimal
    total: Decimal

    def as_dict(self) -> dict:
        return {"tokens": self.tokens, "fee": self.fee, "overage": self.overage, "total": self.total}


@dataclass(frozen=True)
class MonthPlan:
    """A month with tier changes, as one plan the bill and the budget's ceiling price
    (invoices.prorated_amounts, folded): the prorated fees of every period, the overage of
    the periods that are over (fixed now), and, for the current period, what is left of the
    month's pooled included tokens (invoices.pool_quota) and its overage price on the tokens
    past them. `included_tokens` counts from the month's start (the earlier periods' tokens
    plus the pool left for the current one, i.e. max(pool, earlier tokens)), so it applies to
    the month's token counter as a tier's does; without overage it is the hard quota."""

    name: str
    monthly_price: Decimal
    included_tokens: int
    overage_price_per_1k_tokens: Decimal
    overage_allowed: bool
    closed_overage: Decimal
    closed_overage_tokens: int = 0
    # The month's pooled included tokens (every period's prorated share): what a page calls its quota.
    pool: int = 0
    # The month's tier periods (billing.invoices.TierPeriod), in time order: each bills the
    # overage of its tokens at its own tier's price, which a page must not call today's.
    periods: tuple = ()


def month_plan(tenant, month: dt.date | None = None, terms=None, *, tiers=None):
    """What `tenant`'s month is billed on: `terms` (by default its tier), or, when its tier
    changed during the month or it was onboarded in it, the MonthPlan of its tier periods
    (billing.invoices.tier_periods, with the month's included tokens pooled: pool_quota).
    `tiers`: the month's billing.invoices.MonthTiers, when the caller read every tenant's at once."""
    from billing.invoices import month_is_over, tier_periods

    periods = tier_periods(tenant, month or month_start(), tokens=0, month=tiers)  # only the closed periods' count
    if len(periods) == 1 and periods[0].share == 1:
        if terms is not None:
            return terms
        # A month that is over is billed at the terms in force then (its TierTerms history).
        return periods[0].terms if month_is_over(month or month_start()) else tenant.tier
    *closed, current = periods
    return MonthPlan(
        name=current.terms.name,
        monthly_price=sum((p.fee for p in periods), Decimal("0.00")),
        included_tokens=sum(p.tokens for p in closed) + current.allowance,
        overage_price_per_1k_tokens=Decimal(current.terms.overage_price_per_1k_tokens),
        overage_allowed=tenant.tier.overage_allowed if tenant.tier is not None else True,
        closed_overage=sum((p.overage() for p in closed), Decimal("0.00")),
        closed_overage_tokens=sum(p.overage_tokens() for p in closed),
        pool=sum(p.included_tokens for p in periods),
        periods=tuple(periods),
    )


def onboarded_in(tenant, month: dt.date) -> bool:
    """Whether `tenant` was onboarded during `month`: its first month, prorated from then."""
    from billing.invoices import onboarding

    return onboarding(tenant, month) is not None


def _closed_overage(plan) -> Decimal:
    return getattr(plan, "closed_overage", Decimal("0.00"))


def overage_tokens(plan, tokens: int) -> int:
    """The month's tokens billed as overage on `plan` (a tier or a month_plan) with `tokens`
    used: past the (pooled) included tokens, the earlier tier periods' included."""
    plan = _plan(plan)
    return max(0, int(tokens) - int(plan.included_tokens)) + getattr(plan, "closed_overage_tokens", 0)


def bill(tier, tokens: int) -> Bill:
    """What a month with `tokens` used bills on `tier` (or a month_plan), as its invoice will."""
    plan = _plan(tier)
    fee, overage, total = invoice_amounts(plan, max(0, int(tokens)))
    closed = _closed_overage(plan)
    return Bill(tokens=max(0, int(tokens)), fee=fee, overage=overage + closed, total=total + closed)


def monthly_fee(tier) -> Decimal:
    """The lowest a month can bill, hence the lowest budget that means anything."""
    return Decimal(_plan(tier).monthly_price).quantize(CENTS)


class BudgetRule:
    """How a budget bears on a tier (what the limits page says about it)."""

    NONE = "none"  # no budget set
    BELOW_FEE = "below_fee"  # the fee alone passes it: every turn is refused
    CAPS_OVERAGE = "caps_overage"  # a token ceiling above the included tokens
    NO_OVERAGE = "no_overage"  # the plan refuses overage: the quota is the ceiling
    FREE_OVERAGE = "free_overage"  # overage costs nothing: the bill stays at the fee


def budget_rule(tier, budget: Decimal | None) -> str:
    if budget is None:
        return BudgetRule.NONE
    plan = _plan(tier)
    if Decimal(budget) < monthly_fee(plan):
        return BudgetRule.BELOW_FEE
    if not plan.overage_allowed:
        return BudgetRule.NO_OVERAGE
    if Decimal(plan.overage_price_per_1k_tokens) <= 0:
        return BudgetRule.FREE_OVERAGE
    return BudgetRule.CAPS_OVERAGE


def budget_token_ceiling(tier, budget: Decimal | None) -> int | None:
    """The most tokens a month may use with its bill within `budget`; None when the budget
    sets no ceiling of its own (no budget, no overage, or free overage)."""
    rule = budget_rule(tier, budget)
    if rule == BudgetRule.BELOW_FEE:
        return 0
    if rule != BudgetRule.CAPS_OVERAGE:
        return None
    plan = _plan(tier)
    headroom = Decimal(budget) - monthly_fee(plan) - _closed_overage(plan)
    if headroom < 0:
        return 0
    extra = (headroom * 1000 / Decimal(plan.overage_price_per_1k_tokens)).to_integral_value(rounding=ROUND_FLOOR)
    return int(plan.included_tokens) + int(extra)


@dataclass(frozen=True)
class MonthSpend:
    """A tenant's month so far, in what it pays: the bill against its budget."""

    month: dt.date
    tokens_used: int
    tokens_reserved: int
    bill: Bill
    monthly_budget: Decimal | None
    soft_alert_percent: int
    rule: str
    token_ceiling: int | None

    @property
    def budget_percent(self) -> float | None:
        if not self.monthly_budget:
            return None
        return float(100 * self.bill.total / self.monthly_budget)

    @property
    def budget_reached(self) -> bool:
        """No turn can be admitted until the budget is raised or the month ends: the tokens
        used have reached the budget's ceiling (with a budget below the fee, at once)."""
        return self.token_ceiling is not None and self.tokens_used >= self.token_ceiling

    @property
    def alert_reached(self) -> bool:
        return alert_due(self.bill, self.monthly_budget, self.soft_alert_percent)


def alert_threshold(budget: Decimal, percent: int, fee: Decimal = Decimal("0")) -> Decimal:
    """The bill at which the soft alert fires: the plan's fee plus `percent` of what the
    budget leaves above it. The fee is owed from the first day, so a share of the whole
    budget would fire on the month's first turn whenever the budget is close to the fee;
    what an admin wants to hear about is the *variable* part (token overage) nearing the
    room the budget gives it."""
    fee = Decimal(fee)
    return fee + max(Decimal("0"), Decimal(budget) - fee) * Decimal(percent) / 100


def alert_due(so_far: Bill, budget: Decimal | None, percent: int) -> bool:
    """Whether the bill `so_far` has crossed the soft alert of `budget` (alert_threshold).
    Only overage raises it: the fee alone never does, not even with a budget equal to the
    fee (the first overage then reaches the budget itself, which stops turns)."""
    if budget is None or so_far.overage <= 0:
        return False
    return so_far.total >= alert_threshold(budget, percent, so_far.fee)


def month_spend(tenant, month: dt.date | None = None) -> MonthSpend:
    """The tenant's bill so far this month (in its tenant context), from the month's
    counter (O(1)); `tokens_reserved` are the answers in progress."""
    from billing.models import MonthlyUsage, TenantBudget

    month = month or month_start()
    row = MonthlyUsage.objects.filter(month=month, user_key=0).values("tokens_used", "tokens_reserved").first() or {}
    budget_row = TenantBudget.objects.first()
    budget = budget_row.monthly_budget if budget_row is not None else None
    tier = month_plan(tenant, month)
    used = int(row.get("tokens_used") or 0)
    return MonthSpend(
        month=month,
        tokens_used=used,
        tokens_reserved=int(row.get("tokens_reserved") or 0),
        bill=bill(tier, used),
        monthly_budget=budget,
        soft_alert_percent=budget_row.soft_alert_percent if budget_row is not None else 80,
        rule=budget_rule(tier, budget),
        token_ceiling=budget_token_ceiling(tier, budget),
    )


def lowest_budget(tenant) -> Decimal:
    """The lowest monthly budget `tenant` can set. A budget recurs, and every whole month bills
    at least the plan's full monthly fee, so it is that fee, even in a month prorated for an
    onboarding or a move (its lower fee only lowers what this month's bill reaches: a budget
    between the two would refuse every turn from the next month's first day). Where this
    month bills more than the plan's fee (a move to a cheaper plan during it also bills the
    dearer plan's days), it is this month's fee."""
    return max(monthly_fee(tenant.tier), monthly_fee(month_plan(tenant)))


def check_tenant_budget(tenant, budget: Decimal | None) -> str | None:
    """Why `budget` cannot be `tenant`'s monthly budget (a message naming the fee), or None."""
    if budget is None:
        return None
    if budget < 0:
        return "A budget cannot be negative."
    lowest = lowest_budget(tenant)
    if budget >= lowest:
        return None
    if lowest > monthly_fee(tenant.tier):
        what = "this month's plan fee (you changed plan during it)"
    else:
        what = "your plan's monthly fee"
    return (
        f"A monthly budget caps what your organisation is billed every month, and {what} is "
        f"${lowest:,.2f}: choose at least ${lowest:,.2f}, or leave it empty for no budget."
    )


def below_fee_from_next_month(tenant, budget: Decimal | None) -> bool:
    """Whether `budget` holds this month's (prorated) fee but not the plan's full monthly fee:
    set before the rule above, or left there by a move to a pricier plan. Next month the fee
    alone passes it and every turn is refused from its first day."""
    if budget is None:
        return False
    return monthly_fee(month_plan(tenant)) <= Decimal(budget) < monthly_fee(tenant.tier)


def check_budget(tier, budget: Decimal | None) -> str | None:
    """Why `budget` cannot be set on `tier` or a month_plan (a message naming the month's fee), or None."""
    if budget is None:
        return None
    if budget < 0:
        return "A budget cannot be negative."
    fee = monthly_fee(tier)
    if budget < fee:
        # A month_plan (tier changed, or the tenant onboarded, this month) bills a prorated fee.
        what = "this month's plan fee (prorated)" if isinstance(tier, MonthPlan) else "your plan's monthly fee"
        return (
            f"A monthly budget caps what your organisation is billed, and {what} is "
            f"${fee:,.2f}: choose at least ${fee:,.2f}, or leave it empty for no budget."
        )
    return None

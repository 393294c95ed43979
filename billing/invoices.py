"""Monthly invoices: drafted from the daily roll-ups, finalised by an operator, exported.

* `draft_invoice(tenant, period)` computes the month's base fee and token
  overage from `UsageDaily` and the tenant's tier, and writes (or rewrites) the
  draft. Running it twice with the same usage gives the same invoice; running it
  after more usage arrived updates the draft. A **final** invoice is never
  touched: the rewrite is a conditional UPDATE on `status = draft`, so even a
  drafter racing a finaliser cannot change a final invoice.
* `finalise_invoice(operator, invoice)` redrafts one last time (so the final
  numbers are the roll-ups' at that moment), then flips draft → final with a
  conditional UPDATE and writes the audit log. Only a month that is over can be
  finalised.
* `invoice_csv()` / `invoice_json()` are the exports (one invoice or many).

Amounts (the same formula reconcile_usage checks, `prorated_amounts`):
base fee = tier.monthly_price; overage = max(0, tokens − included_tokens) ×
overage_price_per_1k_tokens / 1000, rounded half-up to the cent;
total = base fee + overage.

A tier change during the month prorates it (`tier_periods`, from the TierChange rows the
tier-change service writes in its transaction): each tier period bills its tier's fee times
its share of the month, by the second (a change takes effect when it is made; by the day
would bill the day of a change twice or not at all), and adds its tier's included tokens
times that share to the month's **pooled** included tokens (`pool_quota`, the one rule).
The month's tokens use the pool up in time order (by the usage events' times): a period's
overage tokens = max(0, its tokens − what is left of the pool when it starts), billed at
its own tier's overage price. Changing tier alone therefore never bills overage: a month
whose tokens stay within the pool bills none, whichever period they were used in. A period
whose fee rounds to $0.00 and that has no overage gets no invoice line. The tenant's bill
so far, its dashboard, the budget's token ceiling (and the hard quota without overage) and
the operator's revenue fold the same pooled periods into one plan (billing.spend.month_plan),
and reconcile_usage checks drafts with `prorated_amounts` of them, so they all agree.

The plan terms (`plan_terms`) are the tier's as they stand while the month runs; each
draft records them on the invoice, and once the month is over the recorded terms are
kept, so a tier edited (or a tenant moved) after the month ended does not reprice it
on the hourly redraft or at finalisation. A plan change while the month runs (a tier's
prices edited, a tenant moved or onboarded) redraws the running month's drafts in the
same transaction (`redraft_running_month`, called by tenants.services), so the invoices
and the operator's revenue never disagree until the next hourly redraft.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
import json
import logging
from dataclasses import dataclass
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal

from django.db import IntegrityError, transaction
from django.db.models import Case, F, IntegerField, Q, Sum, Value, When
from django.utils import timezone

from billing.accounting import CENTS, month_start, next_month
from billing.models import (
    Invoice,
    InvoiceLine,
    InvoiceLineKind,
    InvoiceStatus,
    LimitKind,
    UsageDaily,
    UsageEvent,
    UsageKind,
)
from tenants import audit
from tenants.audit import spreadsheet_safe
from tenants.context import all_tenants, tenant_context
from tenants.services import ServiceError

log = logging.getLogger(__name__)

OPERATOR_REASON = "operator console: invoices"


@dataclass(frozen=True)
class PlanTerms:
    """What a month is billed at: the tier's name and prices (the attributes of a Tier,
    so either can be priced by invoice_amounts)."""

    name: str
    monthly_price: Decimal
    included_tokens: int
    overage_price_per_1k_tokens: Decimal
    overage_allowed: bool = True

    @classmethod
    def of_tier(cls, tier) -> PlanTerms:
        """The terms of a Tier as it stands (or of a billing.models.TierTerms row)."""
        return cls(
            tier.name,
            tier.monthly_price,
            tier.included_tokens,
            tier.overage_price_per_1k_tokens,
            getattr(tier, "overage_allowed", True),
        )

    @classmethod
    def of_invoice(cls, invoice) -> PlanTerms | None:
        """The terms recorded on an invoice, or None (drafted before terms were recorded)."""
        if invoice is None or invoice.plan_monthly_price is None:
            return None
        return cls(
            invoice.plan_name,
            invoice.plan_monthly_price,
            invoice.plan_included_tokens,
            invoice.plan_overage_price_per_1k_tokens,
        )

    def as_fields(self) -> dict:
        return {
            "plan_name": self.name,
            "plan_monthly_price": self.monthly_price,
            "plan_included_tokens": self.included_tokens,
            "plan_overage_price_per_1k_tokens": self.overage_price_per_1k_tokens,
        }


def month_is_over(period: dt.date, today: dt.date | None = None) -> bool:
    return next_month(period) <= (today or timezone.now().astimezone(dt.UTC).date())


def plan_terms(
    tenant, period: dt.date, invoice=None, *, today: dt.date | None = None, month: MonthTiers | None = None
) -> PlanTerms:
    """The terms `period` is billed at: while the month runs, the tenant's tier now; once
    it is over, those its invoice recorded during the month, or without one (e.g. a month
    first drafted after it ended) the tier's terms in force at the month's end (its
    TierTerms history: terms_in_force). Drafting, the operator's revenue table and
    reconcile_usage all ask this one function. `month`: the month's MonthTiers if read."""
    if not month_is_over(period, today):
        return PlanTerms.of_tier(tenant.tier)
    recorded = PlanTerms.of_invoice(invoice)
    if recorded is not None:
        return recorded
    if month is None:
        month = month_tiers(period, tenant, today=today)
    return month.terms_of(tenant.tier)


def record_tier_terms(tier, before=None, at: dt.datetime | None = None) -> None:
    """Keep `tier`'s terms as they stand from `at` (now) on, so a month that is over stays
    billed at the terms in force then. `before`: the tier as stored before this edit; when
    the tier has no history yet (created before it was kept), its terms until now are
    recorded first, in force since the tier was created. Called by the tier service
    (tenants.services.save_tier) inside its transaction."""
    from billing.models import TierTerms

    def row(source, when):
        terms = PlanTerms.of_tier(source)
        return TierTerms(tier_id=tier.pk, effective_at=when, **dataclasses.asdict(terms))

    rows = []
    if before is not None and not TierTerms.objects.filter(tier_id=tier.pk).exists():
        rows.append(row(before, before.created_at))
    rows.append(row(tier, at or timezone.now()))
    TierTerms.objects.bulk_create(rows)


def terms_in_force(period: dt.date, tier_ids=None) -> dict[int, PlanTerms]:
    """Each tier's terms at the end of `period` (by tier id; None: every tier with a
    history): the last TierTerms row in force before the month ended, or, for a tier whose
    history starts after it, the first (the terms it had until its first recorded edit).
    A tier without history is left out: its terms are the tier's as it stands. One query."""
    from billing.models import TierTerms

    end = _month_bounds(period)[1]
    rows = TierTerms.objects.order_by("tier_id", "effective_at", "id")
    if tier_ids is not None:
        rows = rows.filter(tier_id__in=list(tier_ids))
    found: dict[int, PlanTerms] = {}
    for row in rows:
        if row.tier_id not in found or row.effective_at < end:
            found[row.tier_id] = PlanTerms.of_tier(row)
    return found


@dataclass(frozen=True)
class TierPeriod:
    """A stretch of a month on one tier: its terms, when it starts and ends, its share of
    the month (seconds on the tier / seconds in the month) and the tokens used in it."""

    terms: PlanTerms
    start: dt.datetime
    end: dt.datetime
    share: Decimal
    tokens: int = 0
    # What is left of the month's pooled included tokens when the period starts (pool_quota);
    # None: a period on its own, its own included tokens are the pool.
    pool_left: int | None = None

    @property
    def fee(self) -> Decimal:
        return (Decimal(self.terms.monthly_price) * self.share).quantize(CENTS, rounding=ROUND_HALF_UP)

    @property
    def included_tokens(self) -> int:
        """The period's share of its tier's included tokens: what it adds to the month's pool."""
        return int((Decimal(self.terms.included_tokens) * self.share).to_integral_value(rounding=ROUND_FLOOR))

    @property
    def allowance(self) -> int:
        """The included tokens its own tokens may use: what is left of the pool when it starts."""
        return self.included_tokens if self.pool_left is None else self.pool_left

    def overage_tokens(self) -> int:
        """Its tokens past the pool (max(0, tokens − pool left when it starts))."""
        return max(0, int(self.tokens) - self.allowance)

    def overage(self) -> Decimal:
        """Its overage tokens at its own tier's overage price, rounded half-up to the cent."""
        return (Decimal(self.overage_tokens()) * Decimal(self.terms.overage_price_per_1k_tokens) / 1000).quantize(
            CENTS, rounding=ROUND_HALF_UP
        )


def pool_quota(periods: list[TierPeriod]) -> list[TierPeriod]:
    """The month's periods with its included tokens pooled: the one rule for a month's overage.

    The pool is the sum of every period's prorated included tokens; the periods use it up in
    time order, so each starts with what the earlier ones left (`pool_left`) and only its tokens
    past that are overage, billed at its own tier's price. A tier change alone therefore never
    bills overage: a month under the pool bills none, whichever period its tokens fell in."""
    left = sum(p.included_tokens for p in periods)
    pooled = []
    for p in periods:
        pooled.append(dataclasses.replace(p, pool_left=left))
        left = max(0, left - int(p.tokens))
    return pooled


def _month_bounds(period: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(period, dt.time.min, tzinfo=dt.UTC)
    return start, dt.datetime.combine(next_month(period), dt.time.min, tzinfo=dt.UTC)


@dataclass(frozen=True)
class MonthTiers:
    """What a month's tier periods are made of, read at once: the tier changes in it by
    tenant, the tiers they name, and the tokens each tenant used in each of its closed
    periods (all but the last). `month_tiers` reads it for one tenant or for every tenant
    (the operator's revenue table), in three queries either way, however many tenants."""

    changes: dict[int, list]
    tiers: dict[int, object]
    closed_tokens: dict[int, list[int]]
    # A month that is over: each tier's terms in force at its end (terms_in_force), by tier id.
    terms: dict[int, PlanTerms] = dataclasses.field(default_factory=dict)

    def terms_of(self, tier) -> PlanTerms:
        """What `tier` bills this month at: its terms then for a month that is over, else as it stands."""
        return self.terms.get(tier.pk) or PlanTerms.of_tier(tier)


def month_tiers(period: dt.date, tenant=None, *, today: dt.date | None = None) -> MonthTiers:
    """The tier changes of `period` for `tenant` (in its context), or with no tenant for
    every tenant: a cross-tenant read, so it must run inside all_tenants() (the operator
    console), through the models' explicitly named `unscoped` managers. For a month that is
    over, also the terms its tiers were in force at then (one more query)."""
    from billing.models import TierChange
    from tenants.models import Tier

    start, end = _month_bounds(period)
    if tenant is not None:
        with tenant_context(tenant):
            month = _month_tiers(start, end, TierChange.objects, UsageEvent.objects, Tier)
    else:
        month = _month_tiers(start, end, TierChange.unscoped, UsageEvent.unscoped, Tier)
    if not month_is_over(period, today):
        return month
    if tenant is None:
        return dataclasses.replace(month, terms=terms_in_force(period))
    return dataclasses.replace(month, terms=terms_in_force(period, {tenant.tier_id, *month.tiers}))


def _month_tiers(start, end, change_rows, usage_rows, tier_model) -> MonthTiers:
    changes: dict[int, list] = {}
    for change in (
        change_rows.filter(effective_at__gt=start, effective_at__lt=end)
        .annotate(onboarded_at=F("tenant__created_at"))
        .order_by("tenant_id", "effective_at", "id")
    ):
        changes.setdefault(change.tenant_id, []).append(change)
    if not changes:
        return MonthTiers({}, {}, {})
    tier_ids = {c.tier_after_id for rows in changes.values() for c in rows}
    tier_ids |= {c.tier_before_id for rows in changes.values() for c in rows} - {None}
    tiers = tier_model.objects.in_bulk(tier_ids)
    # The tokens of every closed period of every tenant in one GROUP BY: each event is put in
    # the slot of the period it falls in (a CASE over the periods' bounds).
    slots, whens = [], []
    for tenant_id, rows in changes.items():
        spans = _spans(start, end, rows, rows[0].tier_after_id, _onboarding(rows[0].onboarded_at, start, end))
        for since, until, _tier_id in spans[:-1]:
            whens.append(When(tenant_id=tenant_id, created_at__gte=since, created_at__lt=until, then=Value(len(slots))))
            slots.append(tenant_id)
    closed_tokens: dict[int, list[int]] = {tenant_id: [] for tenant_id in changes}
    used: dict[int, int] = {}
    if whens:
        for row in (
            # The plan's tokens: turns' (embedding tokens are no quota, metering.record_embedding).
            usage_rows.filter(
                tenant_id__in=list(changes), created_at__gte=start, created_at__lt=end, kind=UsageKind.AGENT_TURN
            )
            .annotate(slot=Case(*whens, default=None, output_field=IntegerField()))
            .filter(slot__isnull=False)
            .order_by()
            .values("slot")
            .annotate(i=Sum("input_tokens"), o=Sum("output_tokens"))
        ):
            used[row["slot"]] = int(row["i"] or 0) + int(row["o"] or 0)
    for slot, tenant_id in enumerate(slots):
        closed_tokens[tenant_id].append(used.get(slot, 0))
    return MonthTiers(changes, tiers, closed_tokens)


def _onboarding(created_at: dt.datetime | None, start: dt.datetime, end: dt.datetime) -> dt.datetime | None:
    """When a tenant onboarded during the month [start, end) began (to the whole second,
    like a tier change), or None when it was onboarded before the month (or after: a month
    it has no tier period in is billed whole, as before it was onboarded nothing prorates)."""
    if created_at is None:
        return None
    since = created_at.astimezone(dt.UTC).replace(microsecond=0)
    return since if start < since < end else None


def onboarding(tenant, period: dt.date) -> dt.datetime | None:
    """When `tenant` was onboarded, if that was during `period` (see _onboarding)."""
    return _onboarding(getattr(tenant, "created_at", None), *_month_bounds(period))


def tier_periods(
    tenant, period: dt.date, terms: PlanTerms | None = None, tokens: int | None = None, *, month=None
) -> list[TierPeriod]:
    """The month's tier periods, from the tier changes recorded in it (billing.models.TierChange)
    and the tenant's onboarding (its created_at: a tenant onboarded during the month is billed
    from then, its first period starting at onboarding), with the tokens used in each (from the
    usage events' times; the last period gets the rest of the month's `tokens`, by default
    `period_usage`, so the periods add up to them). Without a change or an onboarding in the
    month: one period, the whole month at `terms` (plan_terms), share 1 — the unprorated bill.

    `month` is the month's MonthTiers when the caller read them already (the operator table
    reads every tenant's at once); by default they are read for this tenant.

    Proration is by the second: a plan change takes effect the moment an operator makes it, and
    the day a change happens is otherwise billed twice or not at all. Fee and included tokens
    are the tier's times its share; the included tokens are pooled for the month (pool_quota)
    and each period's tokens past what is left of the pool are overage at its tier's price."""
    start, end = _month_bounds(period)
    onboarded = onboarding(tenant, period)
    if month is None:
        month = month_tiers(period, tenant)
    changes = month.changes.get(tenant.pk, [])
    own_terms = terms or month.terms_of(tenant.tier)
    if not changes and onboarded is None:
        return pool_quota([TierPeriod(own_terms, start, end, Decimal(1), int(tokens or 0))])
    spans = _spans(start, end, changes, tenant.tier_id, onboarded)
    periods = _split(start, end, spans, month, own_terms if not changes else None)
    if tokens is None:
        with tenant_context(tenant):
            tokens = period_usage(period)[0]
    counted = list(month.closed_tokens.get(tenant.pk, []))
    counted.append(max(0, int(tokens) - sum(counted)))
    return pool_quota([dataclasses.replace(p, tokens=t) for p, t in zip(periods, counted, strict=True)])


def _spans(start, end, changes, tier_id, onboarding=None) -> list[tuple[dt.datetime, dt.datetime, int]]:
    """(since, until, tier id) of each stretch of the month between its tier changes (on
    `tier_id` without any), from the tenant's onboarding when it came during the month."""
    first_tier_id = (changes[0].tier_before_id or changes[0].tier_after_id) if changes else tier_id
    # By the whole second: a change takes effect at the second it was made.
    bounds = [(start, first_tier_id)] + [(c.effective_at.replace(microsecond=0), c.tier_after_id) for c in changes]
    spans = [
        (since, bounds[i + 1][0] if i + 1 < len(bounds) else end, tier_id) for i, (since, tier_id) in enumerate(bounds)
    ]
    if onboarding is not None:
        # Nothing is billed before the tenant existed: the stretches before it drop out.
        spans = [(max(since, onboarding), until, t) for since, until, t in spans if until > onboarding]
    return spans


def _split(start, end, spans, month: MonthTiers, terms: PlanTerms | None = None) -> list[TierPeriod]:
    """The spans as tier periods, each at its tier's terms this month (MonthTiers.terms_of);
    `terms` prices a month with no tier change (one span)."""
    second = dt.timedelta(seconds=1)
    month_seconds = Decimal((end - start) // second)
    return [
        TierPeriod(
            terms or month.terms_of(month.tiers[tier_id]),
            since,
            until,
            Decimal((until - since) // second) / month_seconds,
        )
        for since, until, tier_id in spans
    ]


def prorated_amounts(periods: list[TierPeriod]) -> tuple[Decimal, Decimal, Decimal]:
    """(base fee, overage amount, total) of a month of tier periods: the one formula.
    With one whole-month period it is invoice_amounts."""
    fee = sum((p.fee for p in periods), Decimal("0.00"))
    overage = sum((p.overage() for p in periods), Decimal("0.00"))
    return fee, overage, fee + overage


def invoice_amounts(tier, tokens: int) -> tuple[Decimal, Decimal, Decimal]:
    """(base fee, overage amount, total) of a month with `tokens` used on `tier`."""
    base_fee = Decimal(tier.monthly_price).quantize(CENTS)
    overage_tokens = max(0, int(tokens) - int(tier.included_tokens))
    overage = (Decimal(overage_tokens) * Decimal(tier.overage_price_per_1k_tokens) / 1000).quantize(
        CENTS, rounding=ROUND_HALF_UP
    )
    return base_fee, overage, base_fee + overage


def period_usage(period: dt.date) -> tuple[int, Decimal]:
    """Tokens and our cost of the current tenant's month, from the roll-ups."""
    row = UsageDaily.objects.filter(day__gte=period, day__lt=next_month(period)).aggregate(
        input_tokens=Sum("input_tokens"), output_tokens=Sum("output_tokens"), cost=Sum("cost")
    )
    tokens = int(row["input_tokens"] or 0) + int(row["output_tokens"] or 0)
    return tokens, Decimal(row["cost"] or 0)


def _lines(tier, period: dt.date, tokens: int) -> list[InvoiceLine]:
    base_fee, overage, _ = invoice_amounts(tier, tokens)
    label = period.strftime("%B %Y")
    quota_name = LimitKind.QUOTA.limit_name.lower()  # what every page calls the included tokens
    lines = [
        InvoiceLine(
            kind=InvoiceLineKind.BASE_FEE,
            description=f"{tier.name} plan, {label} ({quota_name}: {tier.included_tokens:,} tokens)",
            quantity=Decimal("1"),
            unit_price=Decimal(tier.monthly_price),
            amount=base_fee,
        )
    ]
    overage_tokens = max(0, tokens - tier.included_tokens)
    if overage_tokens:
        lines.append(
            InvoiceLine(
                kind=InvoiceLineKind.TOKEN_OVERAGE,
                description=(
                    f"Token overage: {overage_tokens:,} tokens over the {quota_name} of {tier.included_tokens:,}"
                ),
                quantity=(Decimal(overage_tokens) / 1000).quantize(Decimal("0.001")),
                unit_price=Decimal(tier.overage_price_per_1k_tokens),
                amount=overage,
            )
        )
    return lines


def _prorated_lines(periods: list[TierPeriod]) -> list[InvoiceLine]:
    """A month with tier changes: each period's share of its plan's fee and included tokens,
    and its tokens past the month's pooled included tokens at its own price (pool_quota,
    prorated_amounts). A period that bills nothing (a fee that rounds to $0.00, no overage)
    gets no line."""
    quota_name = LimitKind.QUOTA.limit_name.lower()
    pool = sum(p.included_tokens for p in periods)
    lines = []
    for p in periods:
        if not p.fee and not p.overage_tokens():
            continue
        when = f"{p.start:%d %b %H:%M}–{p.end:%d %b %H:%M} UTC"
        lines.append(
            InvoiceLine(
                kind=InvoiceLineKind.BASE_FEE,
                description=(
                    f"{p.terms.name} plan, {when}, {p.share * 100:.2f} % of the month "
                    f"({quota_name}: {p.included_tokens:,} tokens)"
                ),
                quantity=p.share.quantize(Decimal("0.001"), rounding=ROUND_HALF_UP),
                unit_price=Decimal(p.terms.monthly_price),
                amount=p.fee,
            )
        )
        if p.overage_tokens():
            lines.append(
                InvoiceLine(
                    kind=InvoiceLineKind.TOKEN_OVERAGE,
                    description=(
                        f"Token overage, {p.terms.name} plan: {p.overage_tokens():,} tokens past the "
                        f"month's pooled {quota_name} of {pool:,}"
                    ),
                    quantity=(Decimal(p.overage_tokens()) / 1000).quantize(Decimal("0.001")),
                    unit_price=Decimal(p.terms.overage_price_per_1k_tokens),
                    amount=p.overage(),
                )
            )
    return lines


def draft_invoice(tenant, period: dt.date) -> Invoice:
    """Create or update the tenant's draft for `period` (first day of a month). Idempotent.

    Returns the invoice; a final invoice is returned unchanged.
    """
    period = month_start(period)
    with tenant_context(tenant):
        for attempt in (1, 2):
            try:
                return _draft(tenant, period)
            except IntegrityError:
                # Two drafters created the same month at once; the loser retries and updates.
                if attempt == 2:
                    raise
                log.info("invoice %s %s: created concurrently, updating instead", tenant.slug, period)
    raise AssertionError("unreachable")


@transaction.atomic
def _draft(tenant, period: dt.date) -> Invoice:
    invoice = Invoice.objects.filter(period=period).first()
    month = month_tiers(period, tenant)
    terms = plan_terms(tenant, period, invoice, month=month)
    tokens, cost = period_usage(period)
    periods = tier_periods(tenant, period, terms, tokens, month=month)
    base_fee, overage, total = prorated_amounts(periods)
    fields = {
        "base_fee": base_fee,
        "overage_amount": overage,
        "total": total,
        "tokens": tokens,
        "cost": cost,
        **terms.as_fields(),
    }
    if invoice is None:
        with transaction.atomic():
            invoice = Invoice.objects.create(period=period, drafted_at=timezone.now(), **fields)
    else:
        if invoice.status == InvoiceStatus.FINAL:
            return invoice
        # Conditional: a finaliser that got there first wins, and this draft changes nothing.
        changed = Invoice.objects.filter(pk=invoice.pk, status=InvoiceStatus.DRAFT).update(
            drafted_at=timezone.now(), **fields
        )
        if changed != 1:
            invoice.refresh_from_db()
            return invoice
        InvoiceLine.objects.filter(invoice=invoice).delete()
    whole_month = len(periods) == 1 and periods[0].share == 1
    lines = _lines(terms, period, tokens) if whole_month else _prorated_lines(periods)
    InvoiceLine.objects.bulk_create(_with_invoice(lines, invoice))
    invoice.refresh_from_db()
    return invoice


def _with_invoice(lines: list[InvoiceLine], invoice: Invoice) -> list[InvoiceLine]:
    for line in lines:
        line.invoice = invoice
        line.tenant_id = invoice.tenant_id
    return lines


def owes_invoice(*, active: bool, tokens: int, cost: Decimal, invoiced: bool) -> bool:
    """Whether a tenant is billed for a month: while active it owes the plan fee; whatever
    its status now, a month it used (tokens or cost) or that was already invoiced (it was
    active when the month was drafted) is billed too, so suspending a tenant never wipes
    out its last month. `billable_tenant_ids` is the same rule in SQL; the operator's
    revenue table applies this one, so its revenue is what the invoices bill."""
    return active or tokens > 0 or cost > 0 or invoiced


def billable_tenant_ids(period: dt.date) -> list[int]:
    """The tenants that owe an invoice for `period` (see owes_invoice), by id."""
    from tenants.models import Tenant, TenantStatus

    period = month_start(period)
    with all_tenants("billing: which tenants owe an invoice for a month"):
        used = (
            UsageDaily.unscoped.filter(day__gte=period, day__lt=next_month(period))
            .filter(Q(input_tokens__gt=0) | Q(output_tokens__gt=0) | Q(cost__gt=0))
            .values("tenant_id")
        )
        invoiced = Invoice.unscoped.filter(period=period).values("tenant_id")
        return list(
            Tenant.objects.filter(Q(status=TenantStatus.ACTIVE) | Q(pk__in=used) | Q(pk__in=invoiced))
            .order_by("pk")
            .values_list("pk", flat=True)
        )


def draft_all(period: dt.date) -> int:
    """Draft `period` for every tenant that owes it (the operator's button); returns how many."""
    from tenants.models import Tenant

    count = 0
    for tenant in Tenant.objects.select_related("tier").filter(pk__in=billable_tenant_ids(period)).order_by("pk"):
        draft_invoice(tenant, period)
        count += 1
    return count


def tenants_billed_on(tier, period: dt.date | None = None) -> list:
    """The tenants on `tier` that owe an invoice for `period` (default: the running month):
    those whose month a change of the tier's prices re-prices."""
    from tenants.models import Tenant

    period = month_start(period)
    return list(
        Tenant.objects.select_related("tier").filter(tier=tier, pk__in=billable_tenant_ids(period)).order_by("pk")
    )


def record_tier_change(tenant, tier_before_id: int | None, at: dt.datetime | None = None):
    """Record that `tenant` moved from the tier `tier_before_id` to its tier now, effective
    `at` (now): the tier periods proration bills. Called by the tier-change service inside
    its transaction, so the change and its record cannot part."""
    from billing.models import TierChange

    with tenant_context(tenant):
        return TierChange.objects.create(
            tier_before_id=tier_before_id, tier_after_id=tenant.tier_id, effective_at=at or timezone.now()
        )


def redraft_running_month(tenants) -> int:
    """Draw the running month's draft invoice again for each of `tenants` that owes it (or
    draft it for the first time), so the invoices bill what the operator's revenue table
    says the moment a plan changes: a tier's prices edited, a tenant moved to another tier,
    a tenant onboarded. Months already over keep their recorded terms (plan_terms).
    Returns how many were drafted."""
    period = month_start()
    owing = set(billable_tenant_ids(period))
    count = 0
    for tenant in tenants:
        if tenant.pk in owing:
            draft_invoice(tenant, period)
            count += 1
    return count


def finalise_invoice(operator, invoice: Invoice, *, ip: str | None = None, today: dt.date | None = None) -> Invoice:
    """Operator action: last redraft, then draft → final, audited. Refuses an open month."""
    if not (operator.is_authenticated and operator.is_active and operator.is_staff):
        raise ServiceError("Only operators can finalise invoices.")
    today = today or timezone.now().astimezone(dt.UTC).date()
    if invoice.status == InvoiceStatus.FINAL:
        raise ServiceError("This invoice is already final.")
    if next_month(invoice.period) > today:
        raise ServiceError(
            f"{invoice.period:%B %Y} is not over yet; finalise it from {next_month(invoice.period):%-d %B}."
        )
    tenant = invoice.tenant
    with transaction.atomic():
        invoice = draft_invoice(tenant, invoice.period)  # the stored row: its status is the truth
        if invoice.status == InvoiceStatus.FINAL:
            raise ServiceError("This invoice is already final.")
        with tenant_context(tenant):
            changed = Invoice.objects.filter(pk=invoice.pk, status=InvoiceStatus.DRAFT).update(
                status=InvoiceStatus.FINAL, finalized_at=timezone.now(), finalized_by=operator
            )
        if changed != 1:
            raise ServiceError("This invoice was finalised by someone else a moment ago.")
        with all_tenants(OPERATOR_REASON):
            invoice = Invoice.unscoped.select_related("tenant", "finalized_by").get(pk=invoice.pk)
            audit.record(
                "invoice.finalised",
                actor=operator,
                tenant=tenant,
                target=invoice,
                target_repr=f"Invoice {invoice.period:%Y-%m} for {tenant.name}",
                after={"total": str(invoice.total), "tokens": invoice.tokens, "currency": invoice.currency},
                ip=ip,
            )
    return invoice


def ready_drafts(today: dt.date | None = None):
    """Every tenant's drafts whose month is over (see month_is_over): ready to finalise, oldest
    first. Cross-tenant: the caller is in all_tenants() (the operator console)."""
    running = month_start(today or timezone.now().astimezone(dt.UTC).date())
    return (
        Invoice.unscoped.filter(status=InvoiceStatus.DRAFT, period__lt=running)
        .select_related("tenant")
        .order_by("period", "tenant__name", "pk")
    )


def finalise_drafts(
    operator, invoices, *, ip: str | None = None, today: dt.date | None = None
) -> tuple[list[Invoice], list[tuple[str, str]]]:
    """Finalise each invoice through finalise_invoice (each its own transaction, each audited).
    One that fails (finalised by someone else meanwhile, its month not over) is reported as
    (number, reason) and the others still go through. Returns (finalised, failed)."""
    finalised, failed = [], []
    for invoice in invoices:
        try:
            finalised.append(finalise_invoice(operator, invoice, ip=ip, today=today))
        except ServiceError as exc:
            failed.append((invoice_number(invoice), exc.text))
    return finalised, failed


# --- exports -----------------------------------------------------------------------------------

CSV_COLUMNS = (
    "invoice_id",
    "tenant",
    "period",
    "status",
    "currency",
    "line_kind",
    "description",
    "quantity",
    "unit_price",
    "amount",
    "invoice_total",
)


def lines_by_invoice(invoices) -> dict[int, list[InvoiceLine]]:
    """Every line of these invoices in one query. In the operator console (all_tenants) the
    invoices belong to many tenants, so the lines are read through `unscoped` there."""
    from tenants.context import current_scope

    manager = InvoiceLine.unscoped if current_scope().all_tenants else InvoiceLine.objects
    out: dict[int, list[InvoiceLine]] = {invoice.pk: [] for invoice in invoices}
    for line in manager.filter(invoice_id__in=list(out)).order_by("invoice_id", "id"):
        out[line.invoice_id].append(line)
    return out


def invoice_number(invoice: Invoice) -> str:
    return f"INV-{invoice.period:%Y%m}-{invoice.tenant_id:05d}"


def price_text(value: Decimal) -> str:
    """A unit price as an export writes it: fixed-point, never scientific notation
    (str(Decimal("100").normalize()) is "1E+2"), at least to the cent like every amount,
    and with as many more places as the price really has ($0.00125 per 1k tokens)."""
    value = Decimal(value)
    places = max(2, -value.normalize().as_tuple().exponent)
    return f"{value:.{places}f}"


def quantity_text(value: Decimal) -> str:
    """A line's quantity, always to the thousandth (thousands of tokens are stored so)."""
    return f"{Decimal(value):.3f}"


def invoice_csv(invoices) -> str:
    """One row per invoice line (plus the invoice's total on every row), for spreadsheets."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    invoices = list(invoices)
    lines = lines_by_invoice(invoices)
    for invoice in invoices:
        for line in lines[invoice.pk]:
            writer.writerow(
                [
                    invoice_number(invoice),
                    invoice.tenant.slug,
                    f"{invoice.period:%Y-%m}",
                    invoice.status,
                    invoice.currency,
                    line.kind,
                    spreadsheet_safe(line.description),
                    quantity_text(line.quantity),
                    price_text(line.unit_price),
                    str(line.amount),
                    str(invoice.total),
                ]
            )
    return out.getvalue()


def invoice_data(invoice: Invoice, lines: list[InvoiceLine] | None = None) -> dict:
    if lines is None:
        lines = lines_by_invoice([invoice])[invoice.pk]
    return {
        "id": invoice.pk,
        "number": invoice_number(invoice),
        "tenant": invoice.tenant.slug,
        "period": f"{invoice.period:%Y-%m}",
        "status": invoice.status,
        "currency": invoice.currency,
        "base_fee": str(invoice.base_fee),
        "overage_amount": str(invoice.overage_amount),
        "total": str(invoice.total),
        "tokens": invoice.tokens,
        "drafted_at": invoice.drafted_at.isoformat(),
        "finalized_at": invoice.finalized_at.isoformat() if invoice.finalized_at else None,
        "lines": [
            {
                "kind": line.kind,
                "description": line.description,
                "quantity": quantity_text(line.quantity),
                "unit_price": price_text(line.unit_price),
                "amount": str(line.amount),
            }
            for line in lines
        ],
    }


def invoice_json(invoices) -> str:
    invoices = list(invoices)
    lines = lines_by_invoice(invoices)
    return json.dumps({"invoices": [invoice_data(i, lines[i.pk]) for i in invoices]}, indent=2)

"""Metering, limits and invoices (ARCHITECTURE.md §7).

* `UsageEvent` — the raw, append-only record: one per (invocation, kind).
* `PriceBook` / `ModelPrice` — versioned prices; every event records the version.
* `UsageDaily` — the roll-up dashboards read, maintained in the event's transaction.
* `MonthlyUsage` / `Reservation` — the counters admission reserves against, so
  parallel requests cannot overspend a quota or budget.
* `RateLimitState` — the database-backed GCRA state when Redis is not configured.
* `ThrottleEvent`, `TenantBudget`, `UserLimit` — refusals and what admins set.
* `Invoice` / `InvoiceLine` — one invoice per tenant per month.

Money is `Decimal` everywhere. Months are stored as the first day of the month.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils import timezone

from tenants.scoping import PlatformModel, TenantOwnedModel, tenant_key_indexed_by_meta

COST_DIGITS = {"max_digits": 18, "decimal_places": 8}
PRICE_DIGITS = {"max_digits": 14, "decimal_places": 8}
MONEY_DIGITS = {"max_digits": 14, "decimal_places": 2}


class UsageKind(models.TextChoices):
    AGENT_TURN = "agent_turn", "Agent turn"
    # Tokens sent to the knowledge bases' embedding service (agents.knowledge.hybrid): a
    # provider cost attributed to the tenant, not plan tokens (billing.metering.record_embedding).
    EMBEDDING = "embedding", "Embedding"


class UsageEvent(TenantOwnedModel):
    """Append-only; unique per (invocation, kind), so a retried task cannot bill twice.

    Every invocation gets exactly one `agent_turn` event whatever its outcome
    (done, failed, cancelled, blocked); a turn refused at the input guardrails
    has zero tokens and zero cost but still counts as a (blocked) turn.

    `embedding` events are the tokens the knowledge bases' embedding service was paid
    for (billing.metering.record_embedding): one per ingested document version, one per
    query embedded for a turn or a search page. Their `invocation_id` is a key of their
    own (see there), their tokens are `input_tokens`, and they are never turns.

    On PostgreSQL the application role has no UPDATE or DELETE on this table
    (tenants/rls.py), so the user and tenant references never cascade: the user
    is a plain reference (no FK constraint, kept when the user is deleted) and
    the tenant is PROTECTed, like the audit log.
    """

    tenant = tenant_key_indexed_by_meta(on_delete=models.PROTECT)  # Meta.indexes leads with tenant
    invocation_id = models.UUIDField()
    kind = models.CharField(max_length=20, choices=UsageKind.choices, default=UsageKind.AGENT_TURN)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        null=True,
        related_name="+",
    )
    agent_slug = models.CharField(max_length=60, blank=True)
    model_key = models.CharField(max_length=100, blank=True)
    outcome = models.CharField(max_length=10, blank=True, help_text="done, failed, cancelled or blocked")
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    tool_calls = models.PositiveIntegerField(default=0)
    runtime_seconds = models.DecimalField(max_digits=12, decimal_places=3, default=0)
    guardrail_checks = models.PositiveIntegerField(default=0)
    latency_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="Queued → finished; empty for turns blocked before queueing."
    )
    cost = models.DecimalField(**COST_DIGITS, default=0)
    price_book_version = models.PositiveIntegerField(
        default=0, help_text="The price book used; 0 = the model catalogue's list prices (no book covered it)."
    )
    estimated = models.BooleanField(default=False, help_text="Token counts estimated: the provider gave none.")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["invocation_id", "kind"], name="usage_event_once_per_kind")]
        indexes = [models.Index(fields=["tenant", "created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.invocation_id}"

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def save(self, *args, **kwargs):
        if self.pk is not None and not kwargs.get("force_insert"):
            raise ValueError("Usage events are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("Usage events are append-only")


class PriceBook(PlatformModel):
    """A versioned set of prices. The book in force at time T is the one with the
    highest `effective_from` ≤ T; a new price is a new book, never an edit."""

    version = models.PositiveIntegerField(unique=True, validators=[MinValueValidator(1)])
    effective_from = models.DateTimeField(default=timezone.now, db_index=True)
    per_tool_call = models.DecimalField(**PRICE_DIGITS, default=Decimal("0"), validators=[MinValueValidator(0)])
    per_runtime_second = models.DecimalField(**PRICE_DIGITS, default=Decimal("0"), validators=[MinValueValidator(0)])
    note = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-effective_from", "-version"]

    def __str__(self) -> str:
        return f"Price book v{self.version}"


class ModelPrice(PlatformModel):
    price_book = models.ForeignKey(PriceBook, on_delete=models.CASCADE, related_name="model_prices")
    model_key = models.CharField(max_length=100)
    per_1k_input = models.DecimalField(**PRICE_DIGITS, default=Decimal("0"), validators=[MinValueValidator(0)])
    per_1k_output = models.DecimalField(**PRICE_DIGITS, default=Decimal("0"), validators=[MinValueValidator(0)])

    class Meta:
        ordering = ["price_book", "model_key"]
        constraints = [models.UniqueConstraint(fields=["price_book", "model_key"], name="model_price_once_per_book")]

    def __str__(self) -> str:
        return f"{self.model_key} (v{self.price_book.version})"


# Upper bounds (ms) of the latency histogram; the last bucket is "more than 30 s".
LATENCY_BUCKETS_MS = (250, 500, 1000, 2000, 5000, 10000, 30000)
LATENCY_BUCKET_FIELDS = tuple(f"lat_le_{ms}" for ms in LATENCY_BUCKETS_MS) + ("lat_gt_30000",)

# The additive counters of a UsageDaily row (what reconcile and dashboards sum).
DAILY_COUNTERS = (
    "turns",
    "failed_turns",
    "cancelled_turns",
    "blocked_turns",
    "estimated_turns",
    "throttled_requests",
    "input_tokens",
    "output_tokens",
    "tool_calls",
    "runtime_seconds",
    "guardrail_checks",
    "embedding_tokens",
    "cost",
    "latency_ms_sum",
    *LATENCY_BUCKET_FIELDS,
)


def latency_bucket_field(ms: int) -> str:
    for bound, field in zip(LATENCY_BUCKETS_MS, LATENCY_BUCKET_FIELDS, strict=False):
        if ms <= bound:
            return field
    return LATENCY_BUCKET_FIELDS[-1]


class UsageDaily(TenantOwnedModel):
    """Roll-up per tenant × day (UTC) × model × agent × user, added to in the same
    transaction as each usage event (and throttle event), so it always equals the
    sum of the raw rows. `user_key` is the user's id, 0 for none (a NULL would
    defeat the unique constraint)."""

    tenant = tenant_key_indexed_by_meta()  # the unique constraint leads with tenant

    day = models.DateField()
    model_key = models.CharField(max_length=100, blank=True)
    agent_slug = models.CharField(max_length=60, blank=True)
    user_key = models.BigIntegerField(default=0, help_text="User id; 0 when there is none.")
    turns = models.PositiveIntegerField(default=0)
    failed_turns = models.PositiveIntegerField(default=0)
    cancelled_turns = models.PositiveIntegerField(default=0)
    blocked_turns = models.PositiveIntegerField(default=0)
    estimated_turns = models.PositiveIntegerField(default=0)
    throttled_requests = models.PositiveIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    tool_calls = models.BigIntegerField(default=0)
    runtime_seconds = models.DecimalField(max_digits=16, decimal_places=3, default=0)
    guardrail_checks = models.BigIntegerField(default=0)
    # The knowledge bases' embedding tokens (UsageKind.EMBEDDING events): priced into `cost`,
    # never into input/output_tokens, which are the plan's tokens (quota and overage).
    embedding_tokens = models.BigIntegerField(default=0)
    cost = models.DecimalField(**COST_DIGITS, default=0)
    latency_ms_sum = models.BigIntegerField(default=0)
    lat_le_250 = models.PositiveIntegerField(default=0)
    lat_le_500 = models.PositiveIntegerField(default=0)
    lat_le_1000 = models.PositiveIntegerField(default=0)
    lat_le_2000 = models.PositiveIntegerField(default=0)
    lat_le_5000 = models.PositiveIntegerField(default=0)
    lat_le_10000 = models.PositiveIntegerField(default=0)
    lat_le_30000 = models.PositiveIntegerField(default=0)
    lat_gt_30000 = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-day"]
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "day", "model_key", "agent_slug", "user_key"], name="usage_daily_once_per_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.model_key} {self.agent_slug} u{self.user_key}"


class LimitKind(models.TextChoices):
    """The limits a turn can be refused by, labelled with their names: the one name each
    limit has on the limits page, the dashboards, the tenant overview and in the message
    of a refusal (a person's own limits are called what the organisation's are)."""

    RPM = "rpm", "Requests per minute"
    TPM = "tpm", "Tokens per minute"
    CONCURRENCY = "concurrency", "Concurrent sessions"
    QUOTA = "quota", "Monthly token quota"
    BUDGET = "budget", "Monthly budget"
    USER_RPM = "user_rpm", "Requests per minute (per person)"
    USER_TOKENS = "user_tokens", "Monthly token quota (per person)"

    @property
    def limit_name(self) -> str:
        """The limit's name whoever it applies to: "Requests per minute" for USER_RPM too."""
        return str(self.label).removesuffix(" (per person)")


class ThrottleEvent(TenantOwnedModel):
    """A turn refused by a limit. Written in its own transaction, after the
    refused request's transaction rolled back (billing.limits.record_throttle)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.DO_NOTHING, db_constraint=False, null=True, related_name="+"
    )
    kind = models.CharField(max_length=20, choices=LimitKind.choices)
    status = models.PositiveSmallIntegerField(default=429)
    message = models.CharField(max_length=300, blank=True)
    agent_slug = models.CharField(max_length=60, blank=True)
    model_key = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["tenant", "created_at"]),
            # Every tenant's refusals of the last hour (the operator's Load page, billing.load).
            models.Index(fields=["created_at"], name="throttle_event_created_at"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.created_at:%Y-%m-%d %H:%M}"


class TenantBudget(TenantOwnedModel):
    """What the tenant admin sets: a monthly spend ceiling (hard stop at 100 %)
    and the percentage at which admins are alerted once per month."""

    monthly_budget = models.DecimalField(
        **MONEY_DIGITS, null=True, blank=True, validators=[MinValueValidator(Decimal("0"))], help_text="Empty = none."
    )
    soft_alert_percent = models.PositiveSmallIntegerField(
        default=80, validators=[MinValueValidator(1), MaxValueValidator(100)]
    )
    alerted_month = models.DateField(
        null=True, blank=True, help_text="The month whose soft alert was already sent (one alert a month)."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant"], name="tenant_budget_once")]

    def __str__(self) -> str:
        return f"Budget {self.monthly_budget}"


class UserLimit(TenantOwnedModel):
    """Per-person limits inside a tenant (empty = only the tenant's limits apply)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])
    tokens_per_month = models.BigIntegerField(null=True, blank=True, validators=[MinValueValidator(1)])
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "user"], name="user_limit_once_per_user")]

    def __str__(self) -> str:
        return f"Limits for {self.user_id}"


class MonthlyUsage(TenantOwnedModel):
    """Month-to-date counters admission reserves against. `user_key` 0 is the
    tenant's row; other rows are per-person (for UserLimit.tokens_per_month).

    used = settled real usage; reserved = estimates of turns admitted but not yet
    finished. Admission adds to `reserved` with a conditional UPDATE
    (… WHERE used + reserved + n <= limit), so parallel requests cannot overspend;
    metering moves a turn's reservation to `used` with its real numbers."""

    tenant = tenant_key_indexed_by_meta()  # the unique constraint leads with tenant
    month = models.DateField(help_text="First day of the month (UTC).")
    user_key = models.BigIntegerField(default=0)
    tokens_used = models.BigIntegerField(default=0)
    tokens_reserved = models.BigIntegerField(default=0)
    cost_used = models.DecimalField(**COST_DIGITS, default=0)
    cost_reserved = models.DecimalField(**COST_DIGITS, default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "month", "user_key"], name="monthly_usage_once")]

    def __str__(self) -> str:
        return f"{self.month:%Y-%m} u{self.user_key}"


class TierChange(TenantOwnedModel):
    """A change of the tenant's tier, effective at `effective_at`: the durable record of
    which tier each part of a month was on, for proration. Written by the tier-change
    service (tenants.services.update_tenant) in the same transaction as the change, so
    a tier change and its record commit or roll back together. Insert-only."""

    tier_before = models.ForeignKey("tenants.Tier", on_delete=models.PROTECT, related_name="+", null=True)
    tier_after = models.ForeignKey("tenants.Tier", on_delete=models.PROTECT, related_name="+")
    effective_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["effective_at", "id"]
        indexes = [models.Index(fields=["tenant", "effective_at"])]

    def __str__(self) -> str:
        return f"Tier change {self.effective_at:%Y-%m-%d %H:%M:%S}"


class TierTerms(PlatformModel):
    """A tier's plan terms (what billing.invoices.PlanTerms prices a month at) from
    `effective_at` on: the history a closed month is billed from, so an operator editing a
    tier's prices does not reprice the months before (billing.invoices.terms_in_force).
    Written by the tier service (tenants.services.save_tier) in the edit's transaction.
    Insert-only."""

    tier = models.ForeignKey("tenants.Tier", on_delete=models.CASCADE, related_name="+")
    effective_at = models.DateTimeField(default=timezone.now)
    name = models.CharField(max_length=100)
    monthly_price = models.DecimalField(max_digits=12, decimal_places=2)
    included_tokens = models.BigIntegerField()
    overage_price_per_1k_tokens = models.DecimalField(max_digits=12, decimal_places=6)
    overage_allowed = models.BooleanField(default=True)

    class Meta:
        ordering = ["tier", "effective_at", "id"]
        indexes = [models.Index(fields=["tier", "effective_at"])]

    def __str__(self) -> str:
        return f"{self.name} terms from {self.effective_at:%Y-%m-%d %H:%M:%S}"


class ReservationStatus(models.TextChoices):
    HELD = "held", "Held"
    SETTLED = "settled", "Settled"
    RELEASED = "released", "Released"


class Reservation(TenantOwnedModel):
    """The estimate one admitted turn holds in MonthlyUsage until it finishes."""

    tenant = tenant_key_indexed_by_meta()  # Meta.indexes leads with tenant
    invocation_id = models.UUIDField(unique=True)
    month = models.DateField()
    user_key = models.BigIntegerField(default=0)
    tokens = models.BigIntegerField(default=0)
    cost = models.DecimalField(**COST_DIGITS, default=0)
    # The tier's tokens per minute when the estimate was charged to the TPM bucket (0: no
    # such limit, nothing charged; null: reserved before this was kept). The settlement
    # gives back what was charged at that rate, whatever the tier says by the finish.
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=ReservationStatus.choices, default=ReservationStatus.HELD)
    created_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["tenant", "status"])]

    def __str__(self) -> str:
        return f"Reservation {self.invocation_id} ({self.status})"


class RateLimitState(TenantOwnedModel):
    """GCRA state for the database-backed limiter: the theoretical arrival time
    (epoch seconds) of the next request for one key ("rpm", "tpm", "user_rpm:7")."""

    key = models.CharField(max_length=60)
    tat = models.FloatField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "key"], name="rate_limit_state_once")]

    def __str__(self) -> str:
        return self.key


class InvoiceStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    FINAL = "final", "Final"


class Invoice(TenantOwnedModel):
    period = models.DateField(help_text="First day of the invoiced month.")
    status = models.CharField(max_length=10, choices=InvoiceStatus.choices, default=InvoiceStatus.DRAFT)
    currency = models.CharField(max_length=3, default="USD")
    base_fee = models.DecimalField(**MONEY_DIGITS, default=Decimal("0"))
    overage_amount = models.DecimalField(**MONEY_DIGITS, default=Decimal("0"))
    total = models.DecimalField(**MONEY_DIGITS, default=Decimal("0"))
    tokens = models.BigIntegerField(default=0, help_text="Tokens used in the period (from the roll-ups).")
    cost = models.DecimalField(**COST_DIGITS, default=0, help_text="Our cost of the period's usage (roll-ups).")
    drafted_at = models.DateTimeField(default=timezone.now)
    finalized_at = models.DateTimeField(null=True, blank=True)
    finalized_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The plan terms the month is billed at, recorded with every draft while the month
    # runs and kept once it is over (billing.invoices.plan_terms): a tier edited after
    # the month ended does not reprice it. Empty on invoices drafted before they were kept.
    plan_name = models.CharField(max_length=100, blank=True)
    plan_monthly_price = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    plan_included_tokens = models.BigIntegerField(null=True, blank=True)
    plan_overage_price_per_1k_tokens = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)

    class Meta:
        ordering = ["-period"]
        constraints = [models.UniqueConstraint(fields=["tenant", "period"], name="invoice_once_per_period")]

    def __str__(self) -> str:
        return f"Invoice {self.period:%Y-%m}"


class InvoiceLineKind(models.TextChoices):
    BASE_FEE = "base_fee", "Base fee"
    TOKEN_OVERAGE = "token_overage", "Token overage"
    ADJUSTMENT = "adjustment", "Adjustment"


class InvoiceLine(TenantOwnedModel):
    invoice = models.ForeignKey(Invoice, on_delete=models.CASCADE, related_name="lines")
    kind = models.CharField(max_length=20, choices=InvoiceLineKind.choices)
    description = models.CharField(max_length=200)
    quantity = models.DecimalField(max_digits=18, decimal_places=3, default=Decimal("1"))
    unit_price = models.DecimalField(**PRICE_DIGITS, default=Decimal("0"))
    amount = models.DecimalField(**MONEY_DIGITS, default=Decimal("0"))

    class Meta:
        ordering = ["invoice", "id"]

    def __str__(self) -> str:
        return self.description

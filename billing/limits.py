"""Admission of a turn before it is queued (ARCHITECTURE.md §5 step 1, §7).

`admit()` runs inside post_message's transaction, after the membership,
entitlement and busy checks and before anything is written. In order:

1. **Reservation** (monthly quota, monthly budget, per-user monthly tokens): the
   turn's estimated tokens and cost (_estimate: the message, the history, an
   allowance for the passages the runtime retrieves, the maximum output) are added to the month's `MonthlyUsage`
   row with ONE conditional UPDATE (`… WHERE tokens used + reserved + estimate ≤
   limit`). The budget caps the tenant's bill (plan fee + token overage), which is
   a token ceiling (billing.spend.budget_token_ceiling): the limit is the smaller
   of the quota and that ceiling (the cost columns are kept for the operators).
   The database serialises concurrent UPDATEs of a row and re-checks the
   condition on the latest version, so N parallel requests can never reserve
   more than the limit, in any number of processes. Metering later replaces the
   estimate with the real usage (settle) or gives it back (release).
2. **Concurrent sessions**: the count of the tenant's unfinished invocations,
   taken while step 1 holds the tenant's month row locked, so two admissions
   cannot both see the last free slot.
3. **Rate limits** (tenant RPM and TPM from the tier, per-user RPM): GCRA.
   With REDIS_URL one Lua script checks and takes every key of the request at
   once (all or nothing) against the Redis clock, so the limits hold across all
   web processes. Without Redis the same algorithm runs as a conditional UPDATE
   of a `RateLimitState` row per key in this transaction.

   TPM is charged with the turn's estimate here and settled with the real usage when
   metering writes the turn's usage event (settle_tokens_per_minute): the bucket moves
   by (real − estimate) tokens, a debit never refused, a credit never below now. The
   estimate is given back at the rate it was charged at (kept on the Reservation), so a
   tier change while the turn runs neither over-credits nor leaves it charged.

   A turn whose estimate alone is more than the tier's tokens per minute can never
   be taken (the bucket holds one minute's allowance at most): it is refused at once
   with 413 and no Retry-After, telling the person to start a new conversation or
   shorten the message, instead of a "try again in 60 s" that would never come true.

   Rate limits come last so a request refused by a quota does not use up a
   rate token. The one leak left: with Redis, if post_message's transaction
   rolls back *after* admit() (a crash, a guardrail error), the Redis tokens
   stay taken. That errs towards throttling (never towards overspending money),
   is bounded by the number of such rollbacks, and heals within the window.

Refusals raise LimitExceeded (a ServiceError) with the HTTP status (429 for rate
and concurrency limits, 402 for quota/budget, 413 for a turn larger than a minute's
tokens), Retry-After seconds (none for 413) and a code.
The refused request's transaction rolls back, so `records_throttles` (wrapped
around post_message/retry_turn) writes the ThrottleEvent afterwards, in a
transaction of its own.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import math
import time
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import transaction

from billing import accounting, spend
from billing.models import (
    LimitKind,
    MonthlyUsage,
    RateLimitState,
    Reservation,
    TenantBudget,
    ThrottleEvent,
    UsageDaily,
    UserLimit,
)
from tenants.services import ServiceError

log = logging.getLogger(__name__)

MAX_OUTPUT_TOKENS = 1024  # what a turn may generate; the reservation assumes all of it
WINDOW_SECONDS = 60.0  # RPM/TPM window; the GCRA burst is one full window's allowance
CONCURRENCY_RETRY_AFTER = 5
REDIS_KEY_PREFIX = "portal:rl:"


class LimitExceeded(ServiceError):
    """A turn refused by a limit: shown to the person, 429/402 in the API."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 429,
        retry_after: int | None = None,
        code: str = "rate_limited",
        kind: str = "",
    ):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.code = code
        self.kind = kind or code
        # Filled by admit(): who was refused, for the ThrottleEvent.
        self.tenant = None
        self.user_id = None
        self.model_key = ""
        self.agent_slug = ""


def estimate_tokens(text_chars: int) -> int:
    """⌈characters / 4⌉ — the same estimate agents.turns uses when a provider reports none."""
    return (max(0, text_chars) + 3) // 4


@dataclass
class Admission:
    """What admit() reserved for one turn."""

    tenant_id: int | None = None
    user_key: int = 0
    month: object = None
    tokens: int = 0
    cost: Decimal = Decimal("0")
    closed: bool = False
    tokens_per_minute: int = 0  # the rate `tokens` were charged to the TPM bucket at (0: none)

    def attach(self, invocation) -> None:
        """Bind the reservation to the invocation that now exists (same transaction);
        metering settles it by the invocation id."""
        if self.tenant_id is None or self.closed:
            return
        from portal.db import sql

        sql.run(
            *reservation_row(
                self.tenant_id, invocation, self.month, self.user_key, self.tokens, self.cost, self.tokens_per_minute
            )
        )
        self.closed = True

    def release(self, invocation=None, *, guardrail_checks: int = 0) -> None:
        """Give the reservation back (the turn was blocked before it ran), and its
        tokens per minute too, and, if the invocation is given, record it as a blocked
        turn with zero usage."""
        from billing import metering
        from tenants.context import current_tenant

        if self.tenant_id is not None and not self.closed:
            self.closed = True
            _add_reserved(self.tenant_id, self.month, self.user_key, -self.tokens, -self.cost)
            tenant = current_tenant()
            if tenant is not None and tenant.pk == self.tenant_id:
                settle_tokens_per_minute(tenant, estimated=self.tokens, used=0, charged_at=self.tokens_per_minute)
        if invocation is not None:
            metering.record_unrun_turn(invocation, outcome="blocked", guardrail_checks=guardrail_checks)


def reservation_row(tenant_id, invocation, month, user_key, tokens, cost, tokens_per_minute=0) -> tuple[str, list]:
    """The INSERT of a reservation bound to its invocation (metering settles it by the
    invocation id). `tokens_per_minute`: the rate its estimate was charged to the TPM bucket at."""
    from portal.db import sql

    return sql.insert_values(
        Reservation(
            tenant_id=tenant_id,
            invocation_id=invocation.pk,
            month=month,
            user_key=user_key,
            tokens=tokens,
            cost=cost,
            tokens_per_minute=tokens_per_minute,
        )
    )


def _add_reserved(tenant_id, month, user_key, tokens, cost) -> None:
    from billing.metering import upsert_add

    for key in {0, user_key}:
        upsert_add(
            MonthlyUsage,
            {"tenant": tenant_id, "month": month, "user_key": key},
            {"tokens_used": 0, "tokens_reserved": tokens, "cost_used": Decimal("0"), "cost_reserved": cost},
        )


def estimate_turn(offering, text: str, conversation=None, tenant=None) -> tuple[int, Decimal]:
    """The turn's reservation, as plan_admission() computes it (see _estimate): the
    message, the history the runtime is sent, the retrieval allowance when the agent
    reads knowledge bases, and the maximum output, priced at the model's current price."""
    history = passage_chars = None
    if conversation is not None and conversation.pk is not None:
        from portal.db import sql

        history, passage_chars = sql.one(
            f"SELECT ({_HISTORY_CHARS_SQL}), ({_PASSAGE_CHARS_SQL})",
            {
                "tenant": conversation.tenant_id,
                "conversation": conversation.pk,
                "agent": conversation.agent_id,
                "history": _history_messages(),
            },
        )
        tenant = tenant or conversation.tenant
    if tenant is None or not _retrieves(tenant):
        passage_chars = None
    return _estimate(offering, len(text) + (history or 0), passage_chars=passage_chars)


# What the runtime may add to the prompt besides the message and the history: the
# passages its knowledge gateway returns (agents.runtime.knowledge: DEFAULT_K of them per
# turn), each a chunk of at most its base's chunk_size characters (the chunker packs up
# to `size`, agents.knowledge.chunking) framed as "[n] title (source)" in the system
# prompt, after one paragraph asking for citations (agents.runtime.models.base.
# render_system_prompt). Counted in full, so retrieval can never take a quota or a
# budget past its limit: the reservation is settled with the real usage anyway.
# Tool results get no allowance: the reference agent feeds none back into the prompt
# (a tool call is an event it reports, priced per call by the price book).
PASSAGE_FRAME_CHARS = 700  # "[n] " + title (at most 500) + " (source URL)" + blank lines
RETRIEVAL_PREAMBLE_CHARS = 250  # "Answer from the numbered sources below …"


def _retrieved_passages() -> int:
    from agents.runtime.knowledge import DEFAULT_K

    return DEFAULT_K


def _retrieves(tenant) -> bool:
    """Whether the runtime retrieves for this tenant's turns (its plan has knowledge bases)."""
    from agents.knowledge.services import entitled

    return entitled(tenant)


def _estimate(offering, chars: int, prices=None, *, passage_chars: int | None = None) -> tuple[int, Decimal]:
    """THE estimate of a turn (admission reserves it; metering settles it later):
    ⌈(message + history characters + retrieval allowance) / 4⌉ input tokens plus
    MAX_OUTPUT_TOKENS. `passage_chars`: the largest chunk_size among the knowledge bases
    the agent reads, None when the turn retrieves nothing; the allowance is then
    RETRIEVAL_PREAMBLE_CHARS + DEFAULT_K × (passage_chars + PASSAGE_FRAME_CHARS)."""
    if passage_chars:
        chars += RETRIEVAL_PREAMBLE_CHARS + _retrieved_passages() * (int(passage_chars) + PASSAGE_FRAME_CHARS)
    input_tokens = estimate_tokens(chars)
    prices = prices or accounting.prices_for(getattr(offering, "key", ""), offering)
    return input_tokens + MAX_OUTPUT_TOKENS, prices.cost(input_tokens, MAX_OUTPUT_TOKENS)


def admit(tenant, user, offering, text: str, conversation=None) -> Admission:
    """Reserve and rate-limit one turn, or raise LimitExceeded."""
    with refusals_named(tenant, user, offering, conversation):
        plan = plan_admission(tenant, user, offering, text, conversation)
        from portal.db import sql

        return plan.finish(sql.batch(plan.statements()))


@contextlib.contextmanager
def refusals_named(tenant, user, offering, conversation):
    """A LimitExceeded leaving the block says who was refused, for its ThrottleEvent."""
    try:
        yield
    except LimitExceeded as refusal:
        refusal.tenant = tenant
        refusal.user_id = getattr(user, "pk", None)
        refusal.model_key = getattr(offering, "key", "") or ""
        agent = getattr(conversation, "agent", None) if conversation is not None else None
        refusal.agent_slug = getattr(agent, "slug", "") or ""
        raise


# The characters of the history a turn sends the runtime: the conversation's last
# HISTORY_MESSAGES answered ('done') messages, as agents.runtime_gateway.turn_facts reads
# them. Not every message ever written: failed and blocked turns are never sent, and a
# long conversation would otherwise be estimated far above what it costs, for ever.
_HISTORY_CHARS_SQL = """
SELECT SUM(LENGTH(h.content)) FROM (
    SELECT content FROM agents_message
    WHERE tenant_id = %(tenant)s AND conversation_id = %(conversation)s AND status = 'done'
    ORDER BY created_at DESC, id DESC
    LIMIT %(history)s
) h
"""

# The largest chunk (characters) the agent's retrieval can return: the chunk_size of the
# knowledge bases it reads in this tenant, the chosen ones or all when none is chosen
# (agents.knowledge.services.knowledge_bases_for_agent). NULL: no base, nothing retrieved.
_PASSAGE_CHARS_SQL = """
SELECT MAX(kb.chunk_size) FROM knowledge_knowledgebase kb
WHERE kb.tenant_id = %(tenant)s AND (
    kb.id IN (
        SELECT l.knowledge_base_id FROM knowledge_agentknowledge l
        WHERE l.tenant_id = %(tenant)s AND l.agent_id = %(agent)s
    )
    OR NOT EXISTS (
        SELECT 1 FROM knowledge_agentknowledge l WHERE l.tenant_id = %(tenant)s AND l.agent_id = %(agent)s
    )
)
"""

# What admission needs to know besides the tier, in one statement: the conversation's
# history and the agent's largest passage (for the estimate), the person's own limits
# and the tenant's budget.
_FACTS_SQL = f"""
SELECT
    ({_HISTORY_CHARS_SQL}),
    ({_PASSAGE_CHARS_SQL}),
    (SELECT requests_per_minute FROM billing_userlimit WHERE tenant_id = %(tenant)s AND user_id = %(user)s),
    (SELECT tokens_per_month FROM billing_userlimit WHERE tenant_id = %(tenant)s AND user_id = %(user)s),
    (SELECT monthly_budget FROM billing_tenantbudget WHERE tenant_id = %(tenant)s AND monthly_budget IS NOT NULL),
    EXISTS (SELECT 1 FROM billing_tierchange WHERE tenant_id = %(tenant)s AND effective_at > %(month_start)s)
"""  # noqa: S608 (constants)


def _history_messages() -> int:
    from agents.runtime_gateway import HISTORY_MESSAGES

    return HISTORY_MESSAGES


# The reservation: add the estimate to a month row, creating it if need be, but only
# while `used + reserved + estimate` stays within the limits (the WHERE below). The
# database serialises writers of one row and evaluates the condition on its latest
# version, so parallel admissions in any number of processes cannot overshoot. A row
# that does not exist yet starts at zero: admit() checks the estimate alone fits first.
_RESERVE_SQL = """
INSERT INTO billing_monthlyusage
    (tenant_id, month, user_key, tokens_used, tokens_reserved, cost_used, cost_reserved, updated_at)
VALUES (%(tenant)s, %(month)s, %(user_key)s, 0, %(tokens)s, 0, %(cost)s, %(now)s)
ON CONFLICT (tenant_id, month, user_key) DO UPDATE SET
    tokens_reserved = billing_monthlyusage.tokens_reserved + EXCLUDED.tokens_reserved,
    cost_reserved = billing_monthlyusage.cost_reserved + EXCLUDED.cost_reserved
WHERE {condition}
RETURNING user_key
"""
_WITHIN_TOKENS = "billing_monthlyusage.tokens_used + billing_monthlyusage.tokens_reserved <= %(max_tokens)s"


def _reserve_statement(params: dict, *, max_tokens: int | None):
    """The reservation on one month row, or None if the estimate alone is over the limit
    (even an empty month could not take it). `max_tokens`: the limit less the estimate."""
    if max_tokens is not None and max_tokens < 0:
        return None
    statement = _RESERVE_SQL.format(condition=_WITHIN_TOKENS if max_tokens is not None else "1 = 1")
    return statement, {**params, "max_tokens": max_tokens}


def _smallest(*limits_: int | None) -> int | None:
    present = [limit for limit in limits_ if limit is not None]
    return min(present) if present else None


# The unfinished statuses named, not the finished ones excluded: the (tenant, status)
# index then reads only the tenant's turns in progress, however many it ever had.
_RUNNING_SQL = (
    "SELECT COUNT(*) FROM agents_invocation WHERE tenant_id = %s AND status IN ('queued', 'running', 'streaming')"
)


@dataclass
class AdmissionPlan:
    """A turn's admission, prepared: the estimate, and the statements that reserve it.

    admit() sends the statements at once; post_message sends them at the end of its own
    writes, so the tenant's month row (which every turn of the tenant must lock) stays
    locked only from there to the commit. Either way: reservation and concurrency are
    checked by finish() on the statements' results, then the rate limits are taken."""

    tenant: object
    user_key: int
    month: object
    tokens: int
    cost: Decimal
    quota: int | None
    budget: Decimal | None
    user_tokens: int | None
    user_rpm: int | None
    _statements: list

    def statements(self) -> list:
        return list(self._statements)

    def reservation_statement(self, invocation) -> tuple[str, list]:
        """The reservation's row bound to the invocation, for the caller to send."""
        return reservation_row(
            self.tenant.pk, invocation, self.month, self.user_key, self.tokens, self.cost, self._charged_rate()
        )

    def _charged_rate(self) -> int:
        """The tokens per minute finish() charges the estimate at (0: no TPM limit)."""
        tier = self.tenant.tier
        return (tier.tokens_per_minute or 0) if tier is not None else 0

    def finish(self, results: list, *, counted_itself: bool = False) -> Admission:
        """Check the reservation statements' results (as many as statements(), in order);
        take the rate limits; the Admission, or LimitExceeded. `counted_itself`: the
        turn's own invocation was written before the count of turns in progress."""
        tier = self.tenant.tier
        if results[0] is None:
            raise _reservation_refusal(self.tenant, self.month, self.quota, self.budget, self.tokens)
        if self.user_key and results[1] is None:
            raise _user_refusal(self.user_tokens, self.month)
        if tier is not None and tier.concurrent_sessions:
            running = results[-1][0] - (1 if counted_itself else 0)
            if running >= tier.concurrent_sessions:
                raise LimitExceeded(
                    f"Your organisation has reached its limit of concurrent sessions ({tier.concurrent_sessions:,}"
                    " answers in progress at once). Try again when one finishes.",
                    status=429,
                    retry_after=CONCURRENCY_RETRY_AFTER,
                    code="concurrency_limit",
                    kind=LimitKind.CONCURRENCY,
                )
        # 3. Rate limits, all keys at once (after the reservation: a request refused by a
        #    quota does not use up a rate token).
        buckets = []
        if tier is not None and tier.requests_per_minute:
            buckets.append(Bucket(LimitKind.RPM, "rpm", tier.requests_per_minute, 1))
        if tier is not None and tier.tokens_per_minute:
            buckets.append(Bucket(LimitKind.TPM, "tpm", tier.tokens_per_minute, self.tokens))
        if self.user_rpm:
            buckets.append(Bucket(LimitKind.USER_RPM, f"user_rpm:{self.user_key}", self.user_rpm, 1))
        if buckets:
            refused, retry_after = take(self.tenant.pk, buckets)
            if refused is not None:
                raise _rate_refusal(refused, retry_after)
        return Admission(
            tenant_id=self.tenant.pk,
            user_key=self.user_key,
            month=self.month,
            tokens=self.tokens,
            cost=self.cost,
            tokens_per_minute=self._charged_rate(),
        )


def plan_admission(tenant, user, offering, text, conversation) -> AdmissionPlan:
    """Read what admission needs (one round trip) and prepare the reservation: 1. the
    estimate on the month's counters (the tenant row, then the person's), 2. concurrent
    sessions, counted in the same transaction after the tenant row is locked, so two
    admissions cannot both see the last free slot. Raises LimitExceeded at once when the
    estimate alone is over a limit."""
    from django.utils import timezone

    from portal.db import sql

    tier = tenant.tier
    user_key = getattr(user, "pk", None) or 0
    now = timezone.now()
    month = accounting.month_start(now)
    conversation_id = conversation.pk if conversation is not None else None
    facts, price_row = sql.batch(
        [
            (
                _FACTS_SQL,
                {
                    "tenant": tenant.pk,
                    "conversation": conversation_id,
                    "user": user_key,
                    "agent": getattr(conversation, "agent_id", None),
                    "history": _history_messages(),
                    "month_start": sql.dt(dt.datetime.combine(month, dt.time.min, tzinfo=dt.UTC)),
                },
            ),
            accounting.prices_statement(getattr(offering, "key", ""), now),
        ]
    )
    history, passage_chars, user_rpm, user_tokens, budget, tier_changed = facts
    budget = sql.decimal_from_db(budget, 2)
    tokens, cost = _estimate(
        offering,
        len(text) + (history or 0),
        accounting.prices_from_row(price_row, offering),
        passage_chars=passage_chars if _retrieves(tenant) else None,
    )
    if tier is not None and tier.tokens_per_minute and tokens > tier.tokens_per_minute:
        raise _too_large_refusal(tokens, tier.tokens_per_minute)

    params = {"tenant": tenant.pk, "month": sql.date(month), "tokens": tokens, "cost": cost, "now": sql.dt(now)}
    hard_quota = tier is not None and not tier.overage_allowed
    # A month whose tier changed is billed by its prorated tier periods (spend.month_plan: a
    # query of its own); the statement above says whether this one did, so other turns skip it.
    # So is a tenant's first month, from its onboarding (tenant.created_at, already loaded).
    prorated = tier_changed or spend.onboarded_in(tenant, month)
    plan = spend.month_plan(tenant, month) if (budget is not None or hard_quota) and prorated else tier
    # Without overage the included tokens are a hard stop: the month's (prorated) included tokens.
    quota = int(plan.included_tokens) if hard_quota else None
    # The budget caps the bill (fee + overage): as tokens, the ceiling the same UPDATE checks.
    ceiling = spend.budget_token_ceiling(plan, budget)
    limit = _smallest(quota, ceiling)
    tenant_reservation = _reserve_statement(
        {**params, "user_key": 0}, max_tokens=None if limit is None else limit - tokens
    )
    if tenant_reservation is None:
        raise _reservation_refusal(tenant, month, quota, budget, tokens)
    statements = [tenant_reservation]
    if user_key:
        user_reservation = _reserve_statement(
            {**params, "user_key": user_key},
            max_tokens=None if not user_tokens else user_tokens - tokens,
        )
        if user_reservation is None:
            raise _user_refusal(user_tokens, month)
        statements.append(user_reservation)
    if tier is not None and tier.concurrent_sessions:
        statements.append((_RUNNING_SQL, [tenant.pk]))
    return AdmissionPlan(
        tenant=tenant,
        user_key=user_key,
        month=month,
        tokens=tokens,
        cost=cost,
        quota=quota,
        budget=budget,
        user_tokens=user_tokens,
        user_rpm=user_rpm,
        _statements=statements,
    )


def _user_refusal(user_tokens, month) -> LimitExceeded:
    return LimitExceeded(
        f"You have used your monthly token quota ({user_tokens:,} tokens). Ask a tenant admin to raise your limit.",
        status=402,
        retry_after=_seconds_to_next_month(month),
        code="user_token_limit",
        kind=LimitKind.USER_TOKENS,
    )


def _seconds_to_next_month(month) -> int:
    from django.utils import timezone

    start = dt.datetime.combine(accounting.next_month(month), dt.time(), tzinfo=dt.UTC)
    return max(1, int((start - timezone.now()).total_seconds()))


def _reservation_refusal(tenant, month, quota, budget, tokens) -> LimitExceeded:
    row = MonthlyUsage.objects.filter(month=month, user_key=0).first()
    retry = _seconds_to_next_month(month)
    taken = row.tokens_used + row.tokens_reserved if row is not None else 0
    if quota is not None and taken + tokens > quota:
        return LimitExceeded(
            f"Your organisation has used its monthly token quota ({quota:,} tokens) and its plan does not "
            "allow overage. Upgrade the plan or wait for next month.",
            status=402,
            retry_after=retry,
            code="quota_exceeded",
            kind=LimitKind.QUOTA,
        )
    # In the money the tenant is billed (its invoice), never the price book's cost.
    amount = budget if budget is not None else Decimal("0")
    so_far = spend.bill(spend.month_plan(tenant, month), row.tokens_used if row is not None else 0)
    return LimitExceeded(
        f"Your organisation's monthly budget (${amount:,.2f}) has no room for this answer: this month's bill "
        f"is ${so_far.total:,.2f} so far (plan fee ${so_far.fee:,.2f} + token overage ${so_far.overage:,.2f}), "
        "and this answer, with those in progress, could take it past the budget. "
        "A tenant admin can raise it under Usage and billing → Limits and budget.",
        status=402,
        retry_after=retry,
        code="budget_exceeded",
        kind=LimitKind.BUDGET,
    )


def _too_large_refusal(tokens: int, tokens_per_minute: int) -> LimitExceeded:
    """One turn larger than a whole minute's token allowance: waiting never helps (the
    bucket holds at most one minute), so no Retry-After and no "try again"; 413, and
    what the person can do instead."""
    return LimitExceeded(
        f"This message and the conversation so far come to about {tokens:,} tokens, more than your "
        f"organisation's limit of tokens per minute ({tokens_per_minute:,}) allows at once. Start a new "
        "conversation, or send a shorter message.",
        status=413,
        retry_after=None,
        code="turn_too_large",
        kind=LimitKind.TPM,
    )


def _rate_refusal(bucket, retry_after: float) -> LimitExceeded:
    if bucket.quantity > bucket.limit:
        return _too_large_refusal(bucket.quantity, bucket.limit)
    seconds = max(1, math.ceil(retry_after))
    # Named as on the limits page (LimitKind's labels), so the person can find the limit.
    name = LimitKind(bucket.kind).limit_name.lower()
    if bucket.kind == LimitKind.USER_RPM:
        message = f"You have reached your limit of {name} ({bucket.limit:,})."
    else:
        message = f"Your organisation has reached its limit of {name} ({bucket.limit:,})."
    return LimitExceeded(
        f"{message} Try again in {seconds} s.",
        status=429,
        retry_after=seconds,
        code="rate_limited",
        kind=bucket.kind,
    )


# ---------------------------------------------------------------- rate limiting (GCRA)


@dataclass(frozen=True)
class Bucket:
    """One GCRA limit: `limit` units per WINDOW_SECONDS, burst of one window; this
    request takes `quantity` units."""

    kind: str
    key: str
    limit: int
    quantity: int

    @property
    def interval(self) -> float:
        return WINDOW_SECONDS / self.limit


def take(tenant_id: int, buckets: list[Bucket]) -> tuple[Bucket | None, float]:
    """Take `quantity` from every bucket, or from none: (refused bucket, retry after s).

    A request larger than a bucket's whole window can never be taken, however long it
    waits: it is refused here, for both limiters, with no retry time."""
    for bucket in buckets:
        if bucket.quantity > bucket.limit:
            return bucket, 0.0
    if settings.REDIS_URL:
        return _take_redis(tenant_id, buckets)
    return _take_db(tenant_id, buckets)


# GCRA (generic cell rate algorithm) for several keys, all or nothing, on Redis's clock.
# KEYS: one per limit. ARGV: per key: interval (s per unit), tolerance (s), quantity.
# A request is allowed when its new theoretical arrival time is at most `tolerance`
# ahead of now; then every key's TAT moves on. Returns {0} or {index, retry_after}: the
# key that refuses it longest, since the request passes only when every key would take it
# (the first refusing key's wait may be a second while another's is a minute).
GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local new_tats = {}
local refused, wait = 0, 0
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[(i - 1) * 3 + 1])
  local tolerance = tonumber(ARGV[(i - 1) * 3 + 2])
  local quantity = tonumber(ARGV[(i - 1) * 3 + 3])
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local new_tat = tat + interval * quantity
  if new_tat - now > tolerance + 0.000001 and (refused == 0 or new_tat - now - tolerance > wait) then
    refused, wait = i, new_tat - now - tolerance
  end
  new_tats[i] = new_tat
end
if refused > 0 then
  return {refused, tostring(wait)}
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%.6f', new_tats[i]), 'PX', math.ceil((new_tats[i] - now) * 1000) + 1000)
end
return {0, '0'}
"""

# The client and its registered script, published together in one assignment: two globals
# set one after the other let a thread that came in between take the client with no script.
_redis_and_script: tuple | None = None


def _redis():
    global _redis_and_script
    if _redis_and_script is None:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
        _redis_and_script = (client, client.register_script(GCRA_LUA))
    return _redis_and_script


def redis_key(tenant_id: int, key: str) -> str:
    return f"{REDIS_KEY_PREFIX}{tenant_id}:{key}"


def _take_redis(tenant_id: int, buckets: list[Bucket]) -> tuple[Bucket | None, float]:
    _, script = _redis()
    args: list = []
    for bucket in buckets:
        args += [repr(bucket.interval), repr(WINDOW_SECONDS), bucket.quantity]
    index, retry = script(keys=[redis_key(tenant_id, b.key) for b in buckets], args=args)
    index = int(index)
    if index == 0:
        return None, 0.0
    return buckets[index - 1], float(retry)


# One key of the database-backed GCRA: take `step` seconds of the key's allowance if
# its theoretical arrival time allows it, creating the row on first use. (CASE rather
# than GREATEST/MAX: SQLite and PostgreSQL spell the two-argument maximum differently.)
_TAKE_SQL = """
INSERT INTO billing_ratelimitstate (tenant_id, key, tat) VALUES (%(tenant)s, %(key)s, %(first_tat)s)
ON CONFLICT (tenant_id, key) DO UPDATE SET
    tat = CASE WHEN billing_ratelimitstate.tat > %(now)s THEN billing_ratelimitstate.tat ELSE %(now)s END + %(step)s
WHERE billing_ratelimitstate.tat <= %(latest)s
RETURNING tat
"""


def _take_db(tenant_id: int, buckets: list[Bucket]) -> tuple[Bucket | None, float]:
    """The same GCRA as one conditional upsert per key in the caller's transaction:
    `SET tat = max(tat, now) + interval × n WHERE max(tat, now) + interval × n − now ≤ window`.
    The database serialises writers of a row, so no two processes take the last
    unit; a refusal raises and rolls back the keys already taken. Refused: the key whose
    wait is longest among the refusing one and those after it (read, not taken), as the
    Redis script answers; the keys before it took the request, so they hold nothing back."""
    from portal.db import sql

    now = time.time()
    for index, bucket in enumerate(buckets):
        step = bucket.interval * bucket.quantity
        params = {
            "tenant": tenant_id,
            "key": bucket.key,
            "first_tat": now + step,
            "now": now,
            "step": step,
            "latest": now + WINDOW_SECONDS + 1e-6 - step,
        }
        if sql.one(_TAKE_SQL, params) is None:
            waits = [(_wait_db(rest, now), -position) for position, rest in enumerate(buckets[index:])]
            wait, position = max(waits)
            return buckets[index - position], wait
    return None, 0.0


def _wait_db(bucket: Bucket, now: float) -> float:
    """How long until the key's row would take the bucket's quantity (0: it would now)."""
    tat = RateLimitState.objects.filter(key=bucket.key).values_list("tat", flat=True).first() or now
    return max(0.0, max(tat, now) + bucket.interval * bucket.quantity - now - WINDOW_SECONDS)


# ---------------------------------------------------------------- settling TPM

# The TPM bucket was charged with the turn's estimate at admission; when its usage event
# is written, the bucket is moved by real tokens × interval now − estimate × interval then
# (seconds): a debit when the turn used more (never refused: it already happened), a
# credit when it used less (the TAT moves back, never below now). A missing key is an
# empty bucket: nothing to give back, and a debit starts from now. ARGV: the step (s, ±).
GCRA_SETTLE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local step = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + step
if new_tat <= now then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return 1
"""

# The same on a RateLimitState row: SET tat = max(max(tat, now) + step, now), creating
# the row for a debit. (CASE for the maximum, as in _TAKE_SQL.)
_SETTLE_DB_SQL = """
INSERT INTO billing_ratelimitstate (tenant_id, key, tat) VALUES (%(tenant)s, %(key)s, %(first_tat)s)
ON CONFLICT (tenant_id, key) DO UPDATE SET
    tat = CASE
        WHEN (CASE WHEN billing_ratelimitstate.tat > %(now)s THEN billing_ratelimitstate.tat ELSE %(now)s END)
            + %(step)s > %(now)s
        THEN (CASE WHEN billing_ratelimitstate.tat > %(now)s THEN billing_ratelimitstate.tat ELSE %(now)s END)
            + %(step)s
        ELSE %(now)s
    END
"""

_settle_script: tuple | None = None  # (client, script), as _redis_and_script


def settle_tokens_per_minute(tenant, *, estimated: int, used: int, charged_at: int | None = None) -> None:
    """Settle a turn's TPM charge with its real usage (ARCHITECTURE §7: a reservation
    settled with the real usage). metering.record_turn calls it once per invocation: only
    the call that wrote the usage event and closed the turn's held reservation (so a
    retried or replayed finish settles nothing twice).

    Without Redis the row changes in the caller's transaction (with the event). With
    Redis one script call, after the commit (a rolled-back finish settles nothing); if
    Redis cannot be reached the finish still succeeds: the failure is logged and the
    window heals by itself within a minute.

    `charged_at`: the tokens per minute the estimate was charged at (the Reservation's; 0:
    nothing was charged; None: not known, the tier's now). The tier may have changed while
    the turn ran: the estimate is given back at the rate it was taken at (a lower limit's
    longer interval would credit more than was charged, taking other turns' charges with
    it), and the real usage is charged at the rate in force now."""
    tier = getattr(tenant, "tier", None)
    tokens_per_minute = getattr(tier, "tokens_per_minute", None)
    if not tokens_per_minute:  # no limit now: the bucket is not read
        return
    if charged_at is None:
        charged_at = tokens_per_minute
    given_back = int(estimated) * WINDOW_SECONDS / charged_at if charged_at else 0.0
    step = int(used) * WINDOW_SECONDS / tokens_per_minute - given_back
    if step == 0:
        return
    if settings.REDIS_URL:
        key = redis_key(tenant.pk, "tpm")
        transaction.on_commit(lambda: _settle_redis(key, step))
        return
    from portal.db import sql

    now = time.time()
    sql.run(
        _SETTLE_DB_SQL,
        {"tenant": tenant.pk, "key": "tpm", "first_tat": max(now, now + step), "now": now, "step": step},
    )


def _settle_redis(key: str, step: float) -> None:
    global _settle_script
    try:
        client, _ = _redis()
        if _settle_script is None or _settle_script[0] is not client:  # the client was made anew
            _settle_script = (client, client.register_script(GCRA_SETTLE_LUA))
        _settle_script[1](keys=[key], args=[repr(step)])
    except Exception as exc:  # the turn is finished either way; the window heals itself
        log.warning("could not settle %s by %+.3f s in Redis: %s", key, step, exc)


# ---------------------------------------------------------------- recording refusals


def record_throttle(refusal: LimitExceeded) -> None:
    """Write the ThrottleEvent (and the roll-up's throttled count) in a transaction
    of its own. Called after the refused request's transaction rolled back."""
    from billing.metering import upsert_add
    from tenants.context import tenant_context

    if refusal.tenant is None:
        return
    from django.utils import timezone

    now = timezone.now()
    try:
        with tenant_context(refusal.tenant), transaction.atomic():
            ThrottleEvent.objects.create(
                user_id=refusal.user_id,
                kind=refusal.kind,
                status=refusal.status,
                message=" ".join(refusal.messages)[:300],
                agent_slug=refusal.agent_slug,
                model_key=refusal.model_key,
                created_at=now,
            )
            upsert_add(
                UsageDaily,
                {
                    "tenant": refusal.tenant.pk,
                    "day": accounting.utc_day(now),
                    "model_key": refusal.model_key,
                    "agent_slug": refusal.agent_slug,
                    "user_key": refusal.user_id or 0,
                },
                {"throttled_requests": 1},
            )
    except Exception:  # a failed record must not turn a clear 429 into a 500
        log.exception("could not record a throttle event for tenant %s", refusal.tenant.pk)


def records_throttles(func):
    """Decorator for services that call admit(): a LimitExceeded leaving `func`
    (whose transaction has rolled back by then) is recorded, then re-raised."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except LimitExceeded as refusal:
            record_throttle(refusal)
            raise

    return wrapper


# ---------------------------------------------------------------- what tenant admins set


def set_budget(actor, *, monthly_budget: Decimal | None, soft_alert_percent: int) -> TenantBudget:
    """The tenant's monthly budget (None = no budget) and soft-alert threshold. Audited.

    The budget caps the tenant's bill every month (billing.spend), so one below the plan's
    full monthly fee is refused, in a prorated month too: the fee alone would pass it from
    the next month on (spend.lowest_budget)."""
    from tenants import audit
    from tenants.context import require_tenant
    from tenants.roles import Action, require

    require(actor.role, Action.MANAGE_LIMITS)
    tenant = require_tenant()
    if not 1 <= int(soft_alert_percent) <= 100:
        raise ServiceError("The alert threshold is a percentage between 1 and 100.")
    with transaction.atomic():
        # Judged under lock against the plan as it is now, not as the request found it: an
        # operator's tier move or price change locks in the same order (Tier, Tenant, then
        # TenantBudget: tenants.services), so one of the two waits for the other and judges
        # what it committed. The tenant row is the lock, since a tenant may have no budget row.
        current = _locked_tenant(tenant)
        budget = TenantBudget.objects.select_for_update().first() or TenantBudget(tenant=tenant)
        problem = spend.check_tenant_budget(current, monthly_budget)
        if problem:
            raise ServiceError(problem)
        before = {"monthly_budget": _money_text(budget.monthly_budget), "soft_alert_percent": budget.soft_alert_percent}
        if budget.pk is None:
            before = {}
        changed_threshold = budget.soft_alert_percent != soft_alert_percent or budget.monthly_budget != monthly_budget
        budget.monthly_budget = monthly_budget
        budget.soft_alert_percent = soft_alert_percent
        if changed_threshold:
            budget.alerted_month = None  # a new line: alert again when it is crossed
        budget.save()
        audit.record(
            "billing.budget_set",
            actor=actor.user,
            tenant=tenant,
            target=budget,
            target_repr="Monthly budget",
            before=before,
            after={"monthly_budget": _money_text(monthly_budget), "soft_alert_percent": soft_alert_percent},
            ip=actor.ip,
        )
    return budget


def _locked_tenant(tenant):
    """`tenant` read again with its row locked (FOR UPDATE), its tier read after the lock is
    held (a query of its own: a snapshot taken after the operator's change committed)."""
    from tenants.models import Tenant, Tier

    # NO KEY: rows that merely refer to the tenant (usage, messages) are still written meanwhile.
    locked = Tenant.objects.select_for_update(no_key=True).get(pk=tenant.pk)
    locked.tier = Tier.objects.filter(pk=locked.tier_id).first()
    return locked


@dataclass(frozen=True)
class BudgetShortfall:
    """A tenant's monthly budget that its budget form would refuse now, and the lowest it takes."""

    cap: Decimal
    lowest: Decimal
    tier_fee: Decimal

    @property
    def this_months_fee(self) -> bool:
        """The lowest is this month's fee (a move during the month bills the dearer plan's days)."""
        return self.lowest > self.tier_fee


def budget_shortfall(tenant) -> BudgetShortfall | None:
    """The tenant's monthly budget when it is below what the budget form accepts
    (spend.check_tenant_budget: the plan's full monthly fee, or this month's fee when that is
    more), else None. Read in the tenant's context, inside the caller's transaction, with the
    budget row locked until it commits: a tier change asks it after recording the move, so
    this month's fee is the moved one."""
    from tenants.context import tenant_context

    with tenant_context(tenant):
        # Locked: a tenant admin's budget edit waits for the caller's change (set_budget).
        row = TenantBudget.objects.select_for_update().first()
        cap = row.monthly_budget if row is not None else None
        if cap is None or spend.check_tenant_budget(tenant, cap) is None:
            return None
        return BudgetShortfall(cap=cap, lowest=spend.lowest_budget(tenant), tier_fee=spend.monthly_fee(tenant.tier))


def raise_budget_for_plan(operator, tenant, amount: Decimal, *, ip: str | None = None) -> TenantBudget:
    """The operator's half of a tier change: the tenant's monthly budget raised to `amount`,
    the lowest its new plan accepts (budget_shortfall), in the caller's transaction. Audited
    in the tenant's log, so its admins see who moved their cap and why."""
    from tenants import audit
    from tenants.context import tenant_context

    if not (operator.is_authenticated and operator.is_active and operator.is_staff):
        raise ServiceError("Only operators change a tenant's plan.")
    with tenant_context(tenant), transaction.atomic():
        budget = TenantBudget.objects.select_for_update().get()
        before = {"monthly_budget": _money_text(budget.monthly_budget), "soft_alert_percent": budget.soft_alert_percent}
        budget.monthly_budget = amount
        budget.alerted_month = None  # a new line: alert again when it is crossed
        budget.save(update_fields=["monthly_budget", "alerted_month", "updated_at"])
        audit.record(
            "billing.budget_raised_for_plan",
            actor=operator,
            tenant=tenant,
            target=budget,
            target_repr="Monthly budget",
            before=before,
            after={
                "monthly_budget": _money_text(amount),
                "soft_alert_percent": budget.soft_alert_percent,
                "tier": tenant.tier.name,
            },
            ip=ip,
        )
    return budget


def set_user_limit(actor, user, *, requests_per_minute: int | None, tokens_per_month: int | None) -> UserLimit | None:
    """One person's limits inside the tenant (both empty = the tenant's limits only). Audited.

    An owner's limits are an owner's business, as on the members page: an admin who
    could cap an owner at one token could lock the owners out of their own tenant."""
    from tenants import audit
    from tenants.context import require_tenant
    from tenants.models import Membership
    from tenants.roles import Action, Role, can, require

    require(actor.role, Action.MANAGE_LIMITS)
    tenant = require_tenant()
    target = Membership.objects.filter(user=user).values_list("role", flat=True).first()
    if target is None:
        raise ServiceError("This person is not a member of your organisation.")
    if target == Role.OWNER and not can(actor.role, Action.MANAGE_OWNERS):
        raise ServiceError("Only an owner can change an owner's limits.")
    for value in (requests_per_minute, tokens_per_month):
        if value is not None and value < 1:
            raise ServiceError("A limit is at least 1; leave it empty for no personal limit.")
    with transaction.atomic():
        row = UserLimit.objects.select_for_update().filter(user=user).first()
        before = (
            {"requests_per_minute": row.requests_per_minute, "tokens_per_month": row.tokens_per_month} if row else {}
        )
        after = {"requests_per_minute": requests_per_minute, "tokens_per_month": tokens_per_month}
        if requests_per_minute is None and tokens_per_month is None:
            if row is not None:
                row.delete()
            row = None
        else:
            row = row or UserLimit(user=user)
            row.requests_per_minute = requests_per_minute
            row.tokens_per_month = tokens_per_month
            row.save()
        audit.record(
            "billing.user_limit_set",
            actor=actor.user,
            tenant=tenant,
            target=user,
            target_repr=getattr(user, "email", str(user)),
            before=before,
            after=after,
            ip=actor.ip,
        )
    return row


def _money_text(value) -> str | None:
    return None if value is None else f"{Decimal(value):.2f}"

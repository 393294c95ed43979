"""Guardrail services: the effective policy (one place, cached), running it, events, tuning.

Cost per chat turn: one cache round trip (`get_many` of the policy generation, the
tenant's own generation, its cached effective policy and the tenant-list generation); the policy is
compiled once per process per content; other tenants' markers are one automaton
per process, rebuilt when a tenant or canary changes or after MARKERS_TTL seconds.
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from django.db import transaction
from django.db.models import Count, Q
from django.db.models.functions import TruncDate
from django.utils import timezone

from agents.guardrails import backends, detectors, policy
from agents.guardrails.engine import BackendError, Evaluation, Trigger, compile_policy
from agents.guardrails.models import GuardrailEvent, GuardrailPolicy, TenantCanary, TenantGuardrailOverride
from portal.cache import next_generation, optional_cache
from tenants import audit, entitlements
from tenants.context import all_tenants, require_tenant, tenant_context
from tenants.models import Tenant, Tier
from tenants.roles import Action, require
from tenants.services import Actor, ServiceError

POLICY_TTL = 60  # seconds; saves invalidate at once; the TTL bounds a missed signal or a per-process (locmem) cache
MARKERS_TTL = 60
_GEN_KEY = "guardrails:policy-gen"
_TENANTS_GEN_KEY = "guardrails:tenants-gen"
MARKERS_REASON = "guardrails: other tenants' markers for the cross-tenant leakage check"


def _tenant_key(tenant_id: int) -> str:
    return f"guardrails:effective:{tenant_id}"


def _tenant_gen_key(tenant_id: int) -> str:
    return f"guardrails:tenant-gen:{tenant_id}"


# --- the effective policy ------------------------------------------------------------------


@dataclass(frozen=True)
class EffectivePolicy:
    config: dict  # merged (agents.guardrails.policy.merge)
    tier_config: dict
    override: dict  # the tenant's own settings (empty without the entitlement)
    may_override: bool
    tenants_gen: int = 0

    @functools.cached_property
    def compiled(self):
        """The compiled engine, looked up once per EffectivePolicy (each turn gets one)."""
        return compile_policy(self.config)


def tier_config(tier: Tier) -> dict:
    row = GuardrailPolicy.objects.filter(tier=tier).values_list("config", flat=True).first()
    return row or {}


def tenant_override(tenant: Tenant) -> dict:
    with tenant_context(tenant):
        row = TenantGuardrailOverride.objects.values_list("config", flat=True).first()
    return row or {}


def effective_policy(tenant: Tenant) -> EffectivePolicy:
    """The one place the effective policy is computed (and cached per tenant)."""
    values = optional_cache.get_many([_GEN_KEY, _TENANTS_GEN_KEY, _tenant_gen_key(tenant.pk), _tenant_key(tenant.pk)])
    # Both generations as read before the rows: a save that commits while this reads the old
    # row moves the tenant's on (invalidate_tenant), so what is cached below is never taken
    # for the new policy. (Deleting the entry instead let this request put the old row back.)
    gen = (values.get(_GEN_KEY, 0), values.get(_tenant_gen_key(tenant.pk), 0))
    tenants_gen = values.get(_TENANTS_GEN_KEY, 0)
    cached = values.get(_tenant_key(tenant.pk))
    if cached is not None and cached[0] == gen:
        return EffectivePolicy(*cached[1], tenants_gen=tenants_gen)
    tier = tier_config(tenant.tier)
    may_override = entitlements.has_feature(tenant, "custom_guardrails")
    override = tenant_override(tenant) if may_override else {}
    parts = (policy.merge(tier, override), tier, override, may_override)
    optional_cache.set(_tenant_key(tenant.pk), (gen, parts), POLICY_TTL)
    return EffectivePolicy(*parts, tenants_gen=tenants_gen)


def invalidate_tenant(tenant_id: int) -> None:
    next_generation(_tenant_gen_key(tenant_id))


def invalidate_all() -> None:
    """A tier's defaults changed: every tenant's cached policy is stale (a new generation)."""
    next_generation(_GEN_KEY)


def invalidate_tenants_list() -> None:
    next_generation(_TENANTS_GEN_KEY)


# --- other tenants' markers ----------------------------------------------------------------

_markers_state: dict = {"gen": None, "expires": 0.0, "matcher": None}


def tenant_markers(tenant_id: int, name: str, slug: str, canary: str | None) -> list[str]:
    """What identifies a tenant in text: its name, slug, canary and id in the forms ids take.

    A bare number is not a marker (every answer has numbers); `tenant_id=7` is."""
    markers = [name, slug, f"tenant_id={tenant_id}", f"tenant_id: {tenant_id}", f'"tenant_id": {tenant_id}']
    if canary:
        markers.append(canary)
    return [m for m in markers if m and len(m) >= 3]


def other_tenant_markers(tenants_gen: int = 0) -> detectors.MarkerMatcher:
    state = _markers_state
    now = time.monotonic()
    if state["matcher"] is not None and state["gen"] == tenants_gen and now < state["expires"]:
        return state["matcher"]
    matcher = build_other_tenant_markers()
    state.update(gen=tenants_gen, expires=now + MARKERS_TTL, matcher=matcher)
    return matcher


def build_other_tenant_markers() -> detectors.MarkerMatcher:
    """Every tenant's markers as the database has them now (one query for the tenants, one
    for the canaries). Background work that stores what it derives (a document's markers at
    ingestion or rescan) builds its own, so it never works from a matcher this process
    cached before a tenant changed."""
    owners: dict[str, set[int]] = {}
    with all_tenants(MARKERS_REASON):
        canaries = dict(TenantCanary.unscoped.values_list("tenant_id", "value"))
        for tenant_id, name, slug in Tenant.objects.values_list("id", "name", "slug"):
            for marker in tenant_markers(tenant_id, name, slug, canaries.get(tenant_id)):
                # As written: a short marker counts only in its own case (detectors.MIN_CASELESS_MARKER).
                owners.setdefault(marker, set()).add(tenant_id)
    return detectors.MarkerMatcher(owners)


def tenants_generation() -> int:
    """Moves whenever a tenant or canary is saved or deleted (the signals), so a change of
    the set of markers (invalidate_tenants_list)."""
    return optional_cache.get(_TENANTS_GEN_KEY, 0)


class TenantSupplied:
    """Whether a marker the cross-tenant check found in an answer came from the tenant's own side.

    The check is there to stop another customer's data from leaking into an answer. A
    marker the tenant itself put in front of the agent is no sign of that, and blocking on
    it would turn the guard into a name oracle: ask the agent about "Globex", see whether
    the answer is blocked, and know whether Globex is a customer of the platform.

    The tenant's own side is what the agent was sent of this conversation (the person's
    question and the history: their words, and earlier answers that already passed this
    check), the name and instructions of the tenant's own agent (a shared agent's are the
    platform's) and the tenant's own documents. Spelling does not matter: a marker counts
    as written when its `detectors.skeleton` is in the skeleton of the writing, forwards or
    backwards, so "B R A V O inc" or "cni ovarb" hand over "Bravo Inc" as surely as the
    name itself. Words do: it must be there as whole words (detectors.WrittenWords), so
    "Bravo Incubator" or "Bravo. Incidentally" hand over "Bravo" but not "Bravo Inc".

    No oracle in the time either: the time the guardrails take is shown under the answer
    and in its trace, and it passes while the answer streams. So all the work is done by
    `prime()`, before the first check of every turn, whatever the answer holds: the
    conversation from memory, and which markers the tenant's documents hold (one small
    query with knowledge bases, of the markers stored with each document at ingestion;
    markers_in_own_documents). Deciding about a marker found later is a lookup in memory:
    a turn naming another customer costs what a turn naming nobody does."""

    def __init__(self, tenant: Tenant, invocation):
        self.tenant = tenant
        self.invocation = invocation
        self._writing: detectors.WrittenWords | None = None
        self._in_documents: frozenset[str] = frozenset()

    def prime(self) -> None:
        """Read the tenant's writing, once per turn (the guard calls it before every check)."""
        if self._writing is None:
            self._writing = detectors.WrittenWords("\n".join(self._texts()))
            self._in_documents = markers_in_own_documents(self.tenant)

    def __call__(self, marker: str) -> bool:
        if self._writing is None:
            raise RuntimeError("TenantSupplied.prime() runs before the first check of a turn")
        return self._writing.holds(detectors.skeleton(marker)) or marker in self._in_documents

    def _texts(self) -> list[str]:
        from agents.runtime_gateway import turn_facts

        invocation = self.invocation
        # The history as the runtime was sent it: read by the claim or by runtime_gateway.invoke.
        facts = getattr(invocation, "_facts", None)
        if facts is None:
            with tenant_context(self.tenant):
                facts = turn_facts(self.tenant, invocation)
        texts = [invocation.user_message.content, *(message["content"] for message in facts.history)]
        agent = invocation.agent
        if agent.owner_tenant_id == self.tenant.pk:
            texts += [agent.name, agent.instructions]
        return texts


def markers_in_own_documents(tenant: Tenant) -> frozenset[str]:
    """Which other tenants' markers the tenant's own documents hold, in any spelling (for
    TenantSupplied): the union of what each document stores (found when it was ingested,
    agents.knowledge.services.ingest_document), read in one small query per turn that never
    touches the documents' text. An upload or a deletion counts from the next turn on. A
    tenant without knowledge bases in its plan has no documents the agent could have read
    (the knowledge gateway refuses it), so none to read here.

    A document's markers were looked for with the matcher of its ingestion. When the set of
    tenants changes since (a tenant onboarded or renamed, a slug or canary changed), its
    fingerprint no longer matches the current matcher's and a background task reads it again
    (agents.knowledge.tasks.rescan_stale_document_markers); until then its stored markers
    still count. That is safe in one direction only, and it is the right one: what a
    document lists it did hold (its text has not changed, or ingestion would have written
    the list again), so exempting it never lets through a name the tenant did not supply;
    a marker new since may be missing from the list, so an answer naming it is blocked
    until the rescan: an over-block, never a leak.

    The work is the same whatever the answer holds (no timing oracle): one query whose
    rows depend on the tenant's documents, never on the markers found in the answer. Nothing
    is kept per process: that query replaced the one that asked whether the documents had
    changed, so a cache would save no round trip."""
    from agents.knowledge.services import document_markers

    if not entitlements.has_feature(tenant, "knowledge_bases"):
        return frozenset()
    with tenant_context(tenant):
        return document_markers()


def the_person_wrote_it(_marker: str) -> bool:
    """For the try-it console: everything in it is what the person typed, so by
    TenantSupplied's rule no marker in it counts. Showing one would answer "is this
    name another customer?" for whoever types it."""
    return True


def canary_for(tenant: Tenant) -> str:
    """The tenant's canary (created on first use), for planting in its data."""
    with tenant_context(tenant):
        canary = TenantCanary.objects.first()
        if canary is None:
            canary = TenantCanary(tenant=tenant)
            canary.save()
            transaction.on_commit(invalidate_tenants_list)
    return canary.value


# --- running the policy --------------------------------------------------------------------


def _backend_failure(config: dict, stage: str, exc: Exception, text: str) -> Evaluation:
    """Fail closed (block with the policy's message) or open (let it through), and say so."""
    action = "block" if config["failure_mode"] == "closed" else "allow"
    return Evaluation(text=text, triggers=[Trigger("backend_error", type(exc).__name__[:60], action, "")], checks=1)


def run_input(effective: EffectivePolicy, text: str) -> Evaluation:
    config = effective.config
    try:
        if config["backend"] == "bedrock":
            return backends.apply(
                text,
                source="INPUT",
                guardrail_id=config["bedrock_guardrail_id"],
                version=config["bedrock_guardrail_version"],
            )
        return effective.compiled.evaluate_input(text)
    except BackendError as exc:
        return _backend_failure(config, "input", exc, text)


def run_output(
    effective: EffectivePolicy,
    tenant_id: int,
    text: str,
    *,
    final: bool,
    supplied: Callable[[str], bool] | None = None,
    answer: bool = True,
) -> Evaluation:
    """Output checks. Cross-tenant leakage is always the builtin automaton, whatever the backend:
    Bedrock does not know our tenants. `final`: the whole text (Bedrock is asked then, not on
    each window); `supplied` (a TenantSupplied) exempts the markers the tenant's own side
    wrote; `answer=False`: text shown with the answer that is not the answer (a tool call's
    arguments), which the answer's required format does not apply to."""
    config = effective.config
    try:
        compiled = effective.compiled
        markers = other_tenant_markers(effective.tenants_gen)
        if config["backend"] == "bedrock":
            evaluation = Evaluation(text=text)
            compiled.cross_tenant(text, evaluation, markers, tenant_id, supplied)
            if evaluation.blocked or not final:
                return evaluation
            remote = backends.apply(
                text,
                source="OUTPUT",
                guardrail_id=config["bedrock_guardrail_id"],
                version=config["bedrock_guardrail_version"],
            )
            remote.checks += evaluation.checks
            return remote
        return compiled.evaluate_output(
            text, markers=markers, tenant_id=tenant_id, final=final and answer, supplied=supplied
        )
    except BackendError as exc:
        return _backend_failure(config, "output", exc, text)


def run_markers(
    effective: EffectivePolicy, tenant_id: int, text: str, *, supplied: Callable[[str], bool] | None = None
) -> Evaluation:
    """Only the cross-tenant check: cheap enough for every streamed delta."""
    evaluation = Evaluation(text=text)
    markers = other_tenant_markers(effective.tenants_gen)
    effective.compiled.cross_tenant(text, evaluation, markers, tenant_id, supplied)
    return evaluation


def record_events(tenant: Tenant, stage: str, triggers: list[Trigger], *, invocation=None, backend: str = "builtin"):
    if not triggers:
        return []
    with tenant_context(tenant):
        return GuardrailEvent.objects.bulk_create(
            [
                GuardrailEvent(
                    tenant=tenant,
                    invocation=invocation,
                    stage=stage,
                    category=t.category,
                    rule=t.rule[:120],
                    action=t.action,
                    excerpt=t.excerpt[:300],
                    score=t.score,
                    backend=backend,
                )
                for t in triggers
            ]
        )


# --- tuning (UI and API) -------------------------------------------------------------------


def update_override(actor: Actor, config: dict) -> dict:
    tenant = require_tenant()
    require(actor.role, Action.MANAGE_GUARDRAILS)
    if not entitlements.has_feature(tenant, "custom_guardrails"):
        raise ServiceError(f"The {tenant.tier.name} tier does not include custom guardrails; the tier defaults apply.")
    clean = policy.clean_config(config, tenant_override=True)
    with transaction.atomic():
        row = TenantGuardrailOverride.objects.select_for_update().first()
        before = row.config if row else {}
        if row is None:
            row = TenantGuardrailOverride(tenant=tenant)
        row.config = clean
        row.updated_by = actor.user if actor.user and actor.user.is_authenticated else None
        row.save()
        audit.record(
            "guardrails.policy_updated",
            actor=actor.user,
            tenant=tenant,
            target=row,
            target_repr="Guardrail policy",
            before=_audit_view(before),
            after=_audit_view(clean),
            ip=actor.ip,
        )
        transaction.on_commit(lambda: invalidate_tenant(tenant.pk))
    invalidate_tenant(tenant.pk)
    return clean


def _audit_view(config: dict) -> dict:
    """The audit log keeps what changed, with term lists summarised (they can be thousands long)."""
    view = dict(config)
    if "blocked_terms" in view:
        view["blocked_terms"] = f"{len(view['blocked_terms'])} terms"
    return view


def update_tier_policy(user, tier: Tier, config: dict, *, ip: str | None = None) -> dict:
    clean = policy.clean_config(config)
    with transaction.atomic():
        row, _ = GuardrailPolicy.objects.get_or_create(tier=tier)
        before = row.config
        row.config = clean
        row.save()
        audit.record(
            "guardrails.tier_policy_updated",
            actor=user,
            target=tier,
            target_repr=f"Guardrail defaults of {tier.name}",
            before=_audit_view(before),
            after=_audit_view(clean),
            ip=ip,
        )
        transaction.on_commit(invalidate_all)
    invalidate_all()
    return clean


def mark_false_positive(actor: Actor, event: GuardrailEvent, value: bool = True) -> GuardrailEvent:
    require(actor.role, Action.MANAGE_GUARDRAILS)
    changed = GuardrailEvent.objects.filter(pk=event.pk).update(
        false_positive=value, marked_by=actor.user if value else None
    )
    if changed != 1:
        raise ServiceError("That event no longer exists.")
    event.false_positive = value
    return event


@dataclass(frozen=True)
class TryResult:
    stage: str
    text: str  # what would be stored: the enforced text, or the block message when blocked
    blocked: bool
    message: str
    triggers: list[Trigger]
    checks: int
    elapsed_ms: float


def try_text(tenant: Tenant, text: str, stage: str = "input") -> TryResult:
    """What the effective policy would do with `text`, without recording anything."""
    effective = effective_policy(tenant)
    started = time.perf_counter()
    if stage == "output":
        evaluation = run_output(effective, tenant.pk, text, final=True, supplied=the_person_wrote_it)
    else:
        evaluation = run_input(effective, text)
    elapsed = (time.perf_counter() - started) * 1000
    blocked = evaluation.blocked
    message = policy.block_message(effective.config, stage) if blocked else ""
    return TryResult(
        stage,
        # What a chat would store as the answer (or send on as the question): when the policy
        # blocks, the block message (agents.guardrails.enforce), never the text that was blocked.
        message if blocked else evaluation.text,
        blocked,
        message,
        evaluation.triggers,
        evaluation.checks,
        round(elapsed, 2),
    )


# --- metrics -------------------------------------------------------------------------------


def stats_days(days: int = 14) -> tuple[dt.date, dt.datetime]:
    """The period every figure of the guardrail pages covers: the last `days` days (UTC)
    including today, as the chart shows them. Its first day, and the moment it starts."""
    first_day = timezone.now().astimezone(dt.UTC).date() - timedelta(days=days - 1)
    return first_day, dt.datetime.combine(first_day, dt.time.min, tzinfo=dt.UTC)


def stats(events_qs, *, days: int = 14, turns: int | None = None) -> dict:
    """Trigger rate, blocked turns by category per day, top rules and false-positive rate.

    `turns` is every turn of the same days (the caller reads the metered turns, one usage
    event each, from billing's roll-ups). A turn triggered a guardrail if it has an event;
    it was blocked if one of its events blocked it, however many did. Passages flagged while
    the runtime retrieves belong to the turn its token was minted for (turn_in_progress in
    agents.runtime_gateway); only an event of no running turn (a retrieval with a token
    exchanged outside a chat turn, or after its turn ended) is a trigger in all and no
    triggered turn."""
    first_day, since = stats_days(days)
    recent = events_qs.filter(created_at__gte=since)
    totals = recent.aggregate(
        events=Count("id"),
        blocked=Count("invocation", distinct=True, filter=Q(action="block")),
        false_positives=Count("id", filter=Q(false_positive=True)),
        triggered_turns=Count("invocation", distinct=True),
    )
    by_day = (
        recent.filter(action="block")
        .annotate(day=TruncDate("created_at", tzinfo=dt.UTC))
        .values("day", "category")
        .annotate(n=Count("invocation", distinct=True))
        .order_by("day")
    )
    days_list = [first_day + timedelta(days=d) for d in range(days)]
    series: dict = {d: {} for d in days_list}
    for row in by_day:
        if row["day"] in series and row["n"]:
            series[row["day"]][row["category"]] = row["n"]
    peak = max((sum(v.values()) for v in series.values()), default=0) or 1
    chart = [
        {
            "day": d,
            "total": sum(v.values()),
            "bars": [{"category": c, "n": n, "pct": round(100 * n / peak, 1)} for c, n in sorted(v.items())],
        }
        for d, v in series.items()
    ]
    top_rules = list(
        recent.values("category", "rule")
        .annotate(n=Count("id"), fp=Count("id", filter=Q(false_positive=True)))
        .order_by("-n", "rule")[:10]
    )
    trigger_rate = None
    if turns:
        trigger_rate = round(100 * totals["triggered_turns"] / turns, 1)
    fp_rate = round(100 * totals["false_positives"] / totals["events"], 1) if totals["events"] else 0.0
    return {
        "days": days,
        "totals": totals,
        "trigger_rate": trigger_rate,
        "turns": turns or 0,
        "false_positive_rate": fp_rate,
        "chart": chart,
        "top_rules": top_rules,
        "categories": sorted({b["category"] for day in chart for b in day["bars"]}),
    }

"""Chat: which agents a member sees, which model a turn uses, and posting a turn.

`post_message` is step 1 of a turn (ARCHITECTURE.md §5): checks, then the user
message, the assistant placeholder and the queued Invocation in one
transaction, and the Celery task enqueued on the tenant's queue only after
commit. Everything else happens in agents.tasks.run_turn.
"""

from __future__ import annotations

import datetime
import time
import unicodedata
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from agents import tracing
from agents.guardrails import enforce as guardrails
from agents.models import (
    FINAL_STATUSES,
    Agent,
    AgentStatus,
    Conversation,
    Invocation,
    Message,
    MessageStatus,
    ModelOffering,
)
from billing import limits, metering
from portal.db import sql
from tenants import audit, entitlements
from tenants.context import require_tenant, tenant_context
from tenants.models import Tenant
from tenants.roles import Action, require
from tenants.services import Actor, ServiceError

MAX_MESSAGE_CHARS = 20_000
# A conversation's title, taken from its first question (conversation_title) or set by its owner.
TITLE_MAX_CHARS = 80


# --- catalogue ------------------------------------------------------------------------


def enabled_agent_ids(tenant: Tenant) -> set[int]:
    """Agents the tenant's admins allowed (an AgentGrant for the agent's identity)."""
    from tenants.identity.models import AgentGrant

    identity_ids = set(AgentGrant.objects.values_list("agent_id", flat=True))
    return set(Agent.objects.filter(identity_id__in=identity_ids).values_list("pk", flat=True))


def _is_offered(agent: Agent, tenant: Tenant) -> bool:
    """A published agent is offered to the tenant if it is the tenant's own or shared with its tier."""
    return agent.owner_tenant_id == tenant.pk or tenant.tier.slug in (agent.offered_to_tiers or [])


def _offered(tenant: Tenant) -> list[Agent]:
    """Published agents offered to the tenant: shared ones for its tier, and its own."""
    agents = Agent.objects.filter(status=AgentStatus.PUBLISHED).select_related("model")
    return [a for a in agents if _is_offered(a, tenant)]


def agents_for_members(tenant: Tenant) -> list[Agent]:
    """What members may chat with: offered to the tenant and enabled by its admins."""
    enabled = enabled_agent_ids(tenant)
    return [a for a in _offered(tenant) if a.pk in enabled and a.identity_id is not None]


# One statement for what a turn checks about its agent: published, offered to the
# tenant (shared, or its own), granted by the tenant's admins (an AgentGrant for the
# agent's identity), and whether the conversation already has a turn in progress.
# (Model.from_db takes the loaded fields in the model's own field order.)
_AGENT_FIELDS = ("id", "owner_tenant_id", "slug", "name", "model_id", "offered_to_tiers", "status", "identity_id")
_AGENT_FOR_CHAT_SQL = """
SELECT a.id, a.owner_tenant_id, a.slug, a.name, a.model_id, a.offered_to_tiers, a.status, a.identity_id,
    EXISTS (SELECT 1 FROM identity_agentgrant g WHERE g.tenant_id = %(tenant)s AND g.agent_id = a.identity_id),
    EXISTS (
        SELECT 1 FROM agents_invocation i
        WHERE i.tenant_id = %(tenant)s AND i.conversation_id = %(conversation)s
        AND i.status IN ('queued', 'running', 'streaming')
    )
FROM agents_agent a
WHERE a.id = %(agent)s AND a.status = 'published' AND a.identity_id IS NOT NULL
    AND (a.owner_tenant_id IS NULL OR a.owner_tenant_id = %(tenant)s)
"""


def _agent_for_chat(tenant: Tenant, agent_id, conversation_id=None) -> tuple[Agent, bool]:
    """The agent (its routing fields loaded, the rest on access) if a member may chat
    with it, and whether the conversation has a turn in progress."""
    from portal.db import sql

    raw = str(agent_id)
    row = None
    if raw.isascii() and raw.isdigit() and str(int(raw)) == raw and int(raw) < 2**63:
        row = sql.one(_AGENT_FOR_CHAT_SQL, {"tenant": tenant.pk, "agent": int(raw), "conversation": conversation_id})
    if row is None:
        raise ServiceError("This agent is not available to you.")
    values = list(row[: len(_AGENT_FIELDS)])
    values[5] = sql.json_from_db(values[5])
    agent = Agent.from_db("default", _AGENT_FIELDS, values)
    if not _is_offered(agent, tenant) or not row[-2]:
        raise ServiceError("This agent is not available to you.")
    return agent, bool(row[-1])


def access_agent_for_chat(tenant: Tenant, agent_id) -> Agent:
    """One agent of agents_for_members(), by id: the same rules, without listing the whole
    catalogue (it runs on every message posted)."""
    return _agent_for_chat(tenant, agent_id)[0]


# --- model routing --------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    offering: ModelOffering
    reason: str  # "agent", "tier-default", "fine-tuned"


# Model offerings change rarely (an operator edits the catalogue) and are read on every
# turn, twice. Each process keeps the rows a tenant can see for a few seconds; a save or
# delete in this process clears it at once (signals below), other processes within
# OFFERINGS_TTL_SECONDS. A stale entry can only name a model that was just switched off,
# and the worker prices a turn from the row it reads, so nothing is billed wrongly.
OFFERINGS_TTL_SECONDS = 10.0
_offerings_cache: dict[int, tuple[float, dict[str, ModelOffering]]] = {}


def visible_offerings(tenant: Tenant) -> dict[str, ModelOffering]:
    """Active offerings of providers this deployment can reach that the tenant can see
    (shared ones and its own fine-tunes), by key."""
    now = time.monotonic()
    cached = _offerings_cache.get(tenant.pk)
    if cached is not None and cached[0] > now:
        return cached[1]
    with tenant_context(tenant):
        rows = ModelOffering.objects.filter(is_active=True, provider__in=settings.MODEL_PROVIDERS)
        offerings = {o.key: o for o in rows}
    _offerings_cache[tenant.pk] = (now + OFFERINGS_TTL_SECONDS, offerings)
    return offerings


def clear_offerings_cache(**_kwargs) -> None:
    _offerings_cache.clear()


post_save.connect(clear_offerings_cache, sender=ModelOffering, dispatch_uid="offerings-cache-save")
post_delete.connect(clear_offerings_cache, sender=ModelOffering, dispatch_uid="offerings-cache-delete")


def route_model(agent: Agent, tenant: Tenant) -> Route:
    """The agent's model if the tier allows it, else the tier's default; a tenant's
    own fine-tuned version of that model replaces it for that tenant only, when it is
    entitled to fine-tuned models."""
    allowed = [key for key in (tenant.tier.allowed_models or []) if isinstance(key, str)]
    visible = visible_offerings(tenant)
    offerings = {key: visible[key] for key in allowed if key in visible}
    offering, reason = None, ""
    # The agent's model by id among the visible ones (active, of a reachable provider).
    chosen = next((o for o in visible.values() if o.pk == agent.model_id), None) if agent.model_id else None
    if chosen is not None and chosen.key in offerings:
        offering, reason = offerings[chosen.key], "agent"
    else:
        for key in allowed:  # the tier's list is ordered: its first available model is the default
            if key in offerings:
                offering, reason = offerings[key], "tier-default"
                break
    if offering is None:
        raise ServiceError(f"No model is available to the {tenant.tier.name} tier.")
    # Only with the feature: a tenant whose tier lacks it (or was revoked it) keeps its
    # fine-tuned rows but is routed as if it had none.
    fine_tuned = (
        next(
            (o for o in visible.values() if o.owner_tenant_id == tenant.pk and o.base_id == offering.pk),
            None,
        )
        if entitlements.has_feature(tenant, "fine_tuned_models")
        else None
    )
    if fine_tuned is not None:
        return Route(fine_tuned, "fine-tuned")
    return Route(offering, reason)


# --- conversations and turns ------------------------------------------------------------


def _require_chat(actor: Actor) -> Tenant:
    tenant = require_tenant()
    if actor.membership is None or actor.membership.tenant_id != tenant.pk:
        raise ServiceError("You are not a member of this tenant.")
    require(actor.role, Action.USE_AGENTS)
    if not entitlements.has_feature(tenant, "chat"):
        raise ServiceError(f"Chat is not included in the {tenant.tier.name} tier.")
    return tenant


def start_conversation(actor: Actor, agent_id) -> Conversation:
    tenant = _require_chat(actor)
    agent = access_agent_for_chat(tenant, agent_id)
    return Conversation.objects.create(user=actor.user, agent=agent, title="")


def owned_conversations(user):
    """The person's conversations in the current tenant, latest activity first; deleted
    ones are not among them. Every list and ownership check goes through here."""
    return Conversation.objects.filter(user=user, deleted_at__isnull=True)


def listed_conversations(user, *, keeping: Conversation | None = None):
    """The conversations the portal lists: the owned ones that have a message or a title.

    "New conversation" saves one at once (the API's POST conversations answers with
    it), so one nobody wrote in nor named is not listed nor counted; `keeping` is the
    one open on the page, listed even while still empty.
    """
    shown = Q(Exists(Message.objects.filter(conversation=OuterRef("pk")))) | ~Q(title="")
    if keeping is not None:
        shown |= Q(pk=keeping.pk)
    return owned_conversations(user).filter(shown)


RENAMED_TITLE_MAX_CHARS = Conversation._meta.get_field("title").max_length


def _clean_title(title) -> str:
    if not isinstance(title, str):
        raise ServiceError("The title must be text.")
    # One line, without control characters (PostgreSQL cannot store NUL at all).
    visible = "".join(ch for ch in title if ch.isspace() or unicodedata.category(ch) != "Cc")
    cleaned = " ".join(visible.split())
    if not cleaned:
        raise ServiceError("Give the conversation a title.")
    if len(cleaned) > RENAMED_TITLE_MAX_CHARS:
        raise ServiceError(f"A title is at most {RENAMED_TITLE_MAX_CHARS} characters.")
    return cleaned


def rename_conversation(actor: Actor, conversation: Conversation, title) -> Conversation:
    """The owner names their conversation. Its place in the list (latest activity) stays."""
    _require_chat(actor)
    title = _clean_title(title)
    if not owned_conversations(actor.user).filter(pk=conversation.pk).update(title=title):
        raise ConversationGone()
    conversation.title = title
    return conversation


class ConversationConflict(ServiceError):
    """The conversation's state, changed by a request that ran at the same moment, refuses
    this one (HTTP 409 in the API, with the reason)."""

    status = 409


class ConversationBusy(ConversationConflict):
    """The conversation has a turn in progress."""


class ConversationGone(ConversationConflict):
    """The conversation was deleted after this request found it (a delete in another tab
    or client committed first): the request is refused and writes nothing."""

    def __init__(self, message: str = "This conversation was deleted."):
        super().__init__(message)


def delete_conversation(actor: Actor, conversation: Conversation) -> None:
    """The owner deletes their conversation: its text is erased and it is hidden everywhere.

    Its rows are kept, emptied, because its invocations (which would cascade with it) are
    the record behind each usage event, guardrail event and trace: what was billed stays
    explainable and reconcile_usage unchanged. A turn in progress is not stopped for the owner (they
    may want its answer): they are told to stop it or wait."""
    tenant = _require_chat(actor)
    with transaction.atomic():
        # The row lock orders this with a message being posted: that turn's conversation
        # update waits for it and then finds the conversation deleted (_write_turn), or it
        # committed first and the check below, a statement of its own, sees its turn.
        locked = owned_conversations(actor.user).select_for_update().filter(pk=conversation.pk).first()
        if locked is None:
            raise ConversationGone()
        if Invocation.objects.filter(conversation_id=locked.pk).exclude(status__in=FINAL_STATUSES).exists():
            raise ConversationBusy(
                "An answer is still being written: stop it or wait for it to finish, then delete the conversation."
            )
        # What the person and the agent wrote is erased; what it cost is not. The rows stay
        # (each invocation is the record behind its usage event), emptied of text: the
        # messages, the title, the relayed stream of each answer. Guardrail events keep only
        # their redacted excerpts, the admins' record of what the rules caught.
        Conversation.objects.filter(pk=locked.pk).update(deleted_at=timezone.now(), title="")
        Message.objects.filter(conversation_id=locked.pk).update(content="", citations=[], tool_calls=[], error="")
        from agents import streaming

        relayed = list(Invocation.objects.filter(conversation_id=locked.pk).values_list("pk", flat=True))
        streaming.erase(relayed)
        # And again once the delete is visible: a worker whose finish committed just before
        # this may publish its final event after the erase above, then look for the delete
        # (streaming.erase_if_deleted) before it commits; this erase comes after that event.
        transaction.on_commit(lambda: _erase_relay(tenant, relayed))
        # By id only: a conversation is private, and the audit log is read by the tenant's admins.
        audit.record(
            "chat.conversation_deleted",
            actor=actor.user,
            tenant=tenant,
            target=locked,
            target_repr=f"Conversation {locked.pk}",
            ip=actor.ip,
        )


def access_conversation(actor: Actor, conversation_id) -> Conversation:
    """The actor's own conversation (404-style None for missing, foreign or someone else's)."""
    try:
        pk = int(conversation_id)
    except (TypeError, ValueError):
        return None
    if not -(2**63) <= pk < 2**63:
        return None
    tenant = require_tenant()  # what Conversation.objects would require
    global _conversation_reader
    if _conversation_reader is None:
        _conversation_reader = sql.RowReader([(Conversation, "c"), (Agent, "a")])
    # Every message posted looks its conversation up: one hand-written statement (portal.db.sql).
    row = sql.one(
        f"SELECT {_conversation_reader.columns} FROM agents_conversation c JOIN agents_agent a ON a.id = c.agent_id "  # noqa: S608
        "WHERE c.tenant_id = %s AND c.id = %s AND c.user_id = %s AND c.deleted_at IS NULL",
        [tenant.pk, pk, actor.user.pk],
    )
    if row is None:
        return None
    conversation, agent = _conversation_reader.read(row)
    conversation.agent = agent
    return conversation


_conversation_reader = None


def _clean_text(text: str) -> str:
    if not isinstance(text, str):
        raise ServiceError("The message must be text.")
    text = text.replace("\x00", "").strip()
    if not text:
        raise ServiceError("Write a message first.")
    if len(text) > MAX_MESSAGE_CHARS:
        raise ServiceError(f"Messages are limited to {MAX_MESSAGE_CHARS:,} characters.")
    return text


@limits.records_throttles
def post_message(actor: Actor, conversation: Conversation, text: str) -> Invocation:
    """Write the user message and a queued invocation, and enqueue the turn after commit."""
    tenant = _require_chat(actor)
    text = _clean_text(text)
    trace = tracing.TurnTrace(tenant)
    # The checks share the writes' transaction: on PostgreSQL each statement outside one
    # pays its own BEGIN, tenant set_config and COMMIT round trips (portal.db.postgresql).
    with transaction.atomic():
        with trace.span("turn.checks") as span:
            agent, busy = _agent_for_chat(tenant, conversation.agent_id, conversation.pk)
            if busy:
                raise ServiceError("Wait for the current answer to finish (or stop it) before sending another message.")
            route = route_model(agent, tenant)
            span.update(agent=agent.slug, model=route.offering.key, route=route.reason)
        # Limits (a refused turn writes nothing and raises LimitExceeded) and the input
        # guardrails (a blocked turn is recorded and answered at once, never queued). The
        # reservation itself is sent last, with the turn's rows: see _write_turn.
        with trace.span("turn.admit"), limits.refusals_named(tenant, actor.user, route.offering, conversation):
            plan = limits.plan_admission(tenant, actor.user, route.offering, text, conversation)
        with trace.span("turn.guardrails.input") as span:
            verdict = guardrails.screen_input(tenant, actor.user, text)
            span.update(checks=verdict.checks, blocked=verdict.blocked)
        text = verdict.text
        now = timezone.now()
        user_message = Message(
            tenant_id=tenant.pk, conversation=conversation, role=Message.Role.USER, content=text, created_at=now
        )
        assistant = Message(
            tenant_id=tenant.pk,
            conversation=conversation,
            role=Message.Role.ASSISTANT,
            status=MessageStatus.BLOCKED if verdict.blocked else MessageStatus.QUEUED,
            content=verdict.message if verdict.blocked else "",
            blocked_by_guardrails=verdict.blocked,
            model_label=route.offering.name,
            # A microsecond later, so the answer sorts after its question.
            created_at=now + datetime.timedelta(microseconds=1),
        )
        invocation = Invocation(
            tenant_id=tenant.pk,
            conversation=conversation,
            user=actor.user,
            agent=agent,
            queue=tenant.bindings.celery_queue,
            model_key=route.offering.key,
            model_id=route.offering.model_id,
            input_guardrail_checks=verdict.checks,
            trace=trace.spans,
            queued_at=now,
            **(_blocked_fields(verdict, now) if verdict.blocked else {}),
        )
        with limits.refusals_named(tenant, actor.user, route.offering, conversation):
            admission = _write_turn(invocation, user_message, assistant, now, plan)
        _answer_blocked_or_enqueue(tenant, invocation, verdict, admission)
    return invocation


# What may follow a whole word (an apostrophe or a hyphen does not end one).
_WORD_ENDS = frozenset(" ,;:.!?)]}…")


def conversation_title(text: str) -> str:
    """The title a first question gives its conversation: one line, and when longer than
    TITLE_MAX_CHARS, cut at the last word boundary that fits, with an ellipsis, so a list
    of conversations never shows half a word as if it were the whole question."""
    line = " ".join(text.split())
    if len(line) <= TITLE_MAX_CHARS:
        return line
    kept = line[: TITLE_MAX_CHARS - 1]  # room for the ellipsis
    if line[len(kept)] not in _WORD_ENDS:
        # Mid-word: back to the previous space, unless that would drop most of the title
        # (one very long word, a URL): then the word itself is cut.
        space = kept.rfind(" ")
        if space >= TITLE_MAX_CHARS // 2:
            kept = kept[:space]
    return kept.rstrip(" ,;:.-–—") + "…"


# The conversation moves to the top of the list; its first question names it. No row:
# it was deleted since the page was opened (delete_conversation), and the turn is refused.
_TOUCH_CONVERSATION_SQL = (
    "UPDATE agents_conversation SET updated_at = %s, title = CASE WHEN title = '' THEN %s ELSE title END "
    "WHERE tenant_id = %s AND id = %s AND deleted_at IS NULL RETURNING id"
)


def _write_turn(invocation, user_message, assistant, now, plan: limits.AdmissionPlan) -> limits.Admission:
    """The question, the answer's placeholder, the invocation, the conversation's update,
    then the reservation (plan's statements, and its row bound to the invocation unless
    the turn was blocked): the Admission, or LimitExceeded (the caller's transaction then
    rolls all of it back).

    The reservation comes last because it locks the tenant's month row, which every turn
    of the tenant needs: from here the row stays locked only until the commit. On
    PostgreSQL all of it is one round trip (the three inserts are one statement, the
    messages' new ids feeding the invocation's row); on SQLite, statements in turn."""
    conversation_update = (
        _TOUCH_CONVERSATION_SQL,
        [sql.dt(now), conversation_title(user_message.content), invocation.tenant_id, invocation.conversation_id],
    )
    binding = None if invocation.status == MessageStatus.BLOCKED else plan.reservation_statement(invocation)
    reserve = [*([binding] if binding else []), *plan.statements()]
    if sql.connection.vendor != "postgresql":
        sql.insert(user_message)
        sql.insert(assistant)
        invocation.user_message, invocation.assistant_message = user_message, assistant
        sql.insert(invocation)
        if sql.one(*conversation_update) is None:
            raise ConversationGone()
        results = sql.batch(reserve)
    else:
        question_sql, question_values = sql.insert_values(user_message)
        answer_sql, answer_values = sql.insert_values(assistant)
        _, invocation_values = sql.insert_values(invocation)
        fields = sql.insert_fields(Invocation)
        skip = {"user_message_id", "assistant_message_id"}
        values = [v for f, v in zip(fields, invocation_values, strict=True) if f.attname not in skip]
        statements = [(_write_turn_sql(question_sql, answer_sql), [*question_values, *answer_values, *values])]
        results = sql.batch([*statements, conversation_update, *reserve])
        ids, touched, results = results[0], results[1], results[2:]
        if touched is None:
            raise ConversationGone()
        sql.inserted(user_message, ids[0])
        sql.inserted(assistant, ids[1])
        invocation.user_message, invocation.assistant_message = user_message, assistant
        sql.inserted(invocation)
    # The count of turns in progress ran after this turn's row was written: it counts
    # this one too, unless it was blocked (not in progress).
    admission = plan.finish(results[1:] if binding else results, counted_itself=binding is not None)
    admission.closed = binding is not None  # bound: metering settles it; else release() gives it back
    return admission


_WRITE_TURN_SQL: str | None = None


def _write_turn_sql(question_sql: str, answer_sql: str) -> str:
    """WITH q AS (question), a AS (answer) INSERT the invocation with their ids."""
    global _WRITE_TURN_SQL
    if _WRITE_TURN_SQL is None:
        quote = sql.connection.ops.quote_name
        fields = sql.insert_fields(Invocation)
        select = ", ".join(
            "(SELECT id FROM q)"
            if f.attname == "user_message_id"
            else "(SELECT id FROM a)"
            if f.attname == "assistant_message_id"
            # Typed: in INSERT … SELECT the columns do not type the parameters.
            else f"CAST(%s AS {f.db_type(sql.connection)})"
            for f in fields
        )
        columns = ", ".join(quote(f.column) for f in fields)
        _WRITE_TURN_SQL = (
            f"WITH q AS ({question_sql}), a AS ({answer_sql}) "  # noqa: S608 (model metadata)
            f"INSERT INTO agents_invocation ({columns}) SELECT {select} "
            "RETURNING user_message_id, assistant_message_id"
        )
    return _WRITE_TURN_SQL


def _blocked_fields(verdict, now) -> dict:
    return {"status": MessageStatus.BLOCKED, "finished_at": now, "error": verdict.message[:500]}


def _answer_blocked_or_enqueue(tenant: Tenant, invocation: Invocation, verdict, admission) -> None:
    """The end of posting or retrying a turn, inside its transaction: a turn the input
    guardrails blocked is answered at once (its reservation given back, billed as a blocked
    turn, its stream ended with the answer); any other is bound to its reservation (a no-op
    when _write_turn already bound it) and sent to the worker after the commit."""
    verdict.record(invocation)
    if verdict.blocked:
        admission.release(invocation, guardrail_checks=verdict.checks)
        final = {"message_id": invocation.assistant_message_id, "message": verdict.message}
        transaction.on_commit(lambda: _publish_final(tenant, invocation, "blocked", final))
    else:
        admission.attach(invocation)
        _enqueue(invocation)


def _enqueue(invocation: Invocation) -> None:
    from agents.tasks import run_turn

    tenant_id, invocation_id, queue = invocation.tenant_id, str(invocation.pk), invocation.queue
    transaction.on_commit(lambda: run_turn.apply_async(args=[tenant_id, invocation_id], queue=queue))


def requeue_queued_turns(tenant: Tenant, queue: str) -> int:
    """Send the tenant's still-queued turns to `queue` (its queue changed: a move between
    deployment models, a new dedicated queue), after the caller's transaction commits.

    Their task sits in the old queue, which may have no worker any more. Re-sending is
    safe: run_turn is idempotent (turns._claim lets one delivery of a turn claim it), so
    the old copy, if a worker still takes it, finds the turn claimed and does nothing."""
    from agents.tasks import run_turn

    with tenant_context(tenant):
        queued = Invocation.objects.filter(status=MessageStatus.QUEUED, cancel_requested=False)
        waiting = [(str(pk), attempts) for pk, attempts in queued.values_list("pk", "attempts")]
        Invocation.objects.filter(pk__in=[pk for pk, _ in waiting]).update(queue=queue)
    tenant_id = tenant.pk

    def send() -> None:
        # A turn waiting for its retry has used `attempts` of them already (each attempt but
        # the first is a Celery retry, see agents.tasks.run_turn): the new copy goes on from
        # there, or a move would give a failing turn a fresh set of retries.
        for invocation_id, attempts in waiting:
            run_turn.apply_async(args=[tenant_id, invocation_id], queue=queue, retries=attempts)

    if waiting:
        transaction.on_commit(send)
    return len(waiting)


def queue_has_worker(queue: str) -> bool | None:
    """Whether a Celery worker consumes `queue`: True, False, or None when that cannot be
    told (agents.queues.queue_consumers). Best effort, for a warning only."""
    from agents.queues import queue_consumers

    consumers = queue_consumers()
    return None if consumers is None else queue in consumers


@limits.records_throttles
def retry_turn(actor: Actor, invocation: Invocation) -> Invocation:
    """A failed or stopped turn runs again for the same question, as a new invocation.

    A new invocation, not the old one re-queued: the invocation id is the usage
    event's idempotency key, so re-running the old one could never bill the
    retried answer (its usage event would collide with the failed attempt's),
    and its event stream would still end with the old attempt's final event.
    The old invocation stays as it ended; the question and the answer's message
    are reused, so nothing is deleted or duplicated."""
    tenant = _require_chat(actor)
    if invocation.user_id != actor.user.pk:
        raise ServiceError("Only the person who asked can retry.")
    agent = access_agent_for_chat(tenant, invocation.agent_id)
    route = route_model(agent, tenant)
    with transaction.atomic():
        # Locks the old turn: two retries of it cannot both pass the checks below.
        old = Invocation.objects.select_for_update().filter(pk=invocation.pk).first()
        if old is None or old.status not in (MessageStatus.FAILED, MessageStatus.CANCELLED):
            raise ServiceError("Only a failed or stopped answer can be retried.")
        newer = Invocation.objects.filter(assistant_message_id=old.assistant_message_id, queued_at__gte=old.queued_at)
        if newer.exclude(pk=old.pk).exists():
            raise ServiceError("This answer was already retried.")
        if Invocation.objects.filter(conversation_id=old.conversation_id).exclude(status__in=FINAL_STATUSES).exists():
            raise ServiceError("Wait for the current answer to finish (or stop it) before retrying.")
        # Locked too: a delete of the conversation waits for this retry, or this finds it deleted.
        if owned_conversations(actor.user).select_for_update().filter(pk=old.conversation_id).first() is None:
            raise ConversationGone()
        # A retry is a new turn: the same limits and reservation as a new message, and the
        # input guardrails in force now (the policy may have changed since it was first asked).
        question = Message.objects.filter(pk=old.user_message_id).values_list("content", flat=True).first() or ""
        admission = limits.admit(tenant, actor.user, route.offering, question, conversation=old.conversation)
        verdict = guardrails.screen_input(tenant, actor.user, question)
        if verdict.text != question:
            # Redacted further under today's policy: what is stored and sent is the redacted text.
            Message.objects.filter(pk=old.user_message_id).update(content=verdict.text)
        now = timezone.now()
        Message.objects.filter(pk=old.assistant_message_id).update(
            status=MessageStatus.BLOCKED if verdict.blocked else MessageStatus.QUEUED,
            error="",
            content=verdict.message if verdict.blocked else "",
            blocked_by_guardrails=verdict.blocked,
            citations=[],
            tool_calls=[],
            model_label=route.offering.name,
        )
        retried = Invocation.objects.create(
            conversation_id=old.conversation_id,
            user=actor.user,
            agent=agent,
            user_message_id=old.user_message_id,
            assistant_message_id=old.assistant_message_id,
            queue=tenant.bindings.celery_queue,
            model_key=route.offering.key,
            model_id=route.offering.model_id,
            input_guardrail_checks=verdict.checks,
            **(_blocked_fields(verdict, now) if verdict.blocked else {}),
        )
        _answer_blocked_or_enqueue(tenant, retried, verdict, admission)
    return retried


def cancel_turn(actor: Actor, invocation: Invocation) -> None:
    """Ask the worker to stop; a turn that has not started yet is cancelled at once."""
    tenant = _require_chat(actor)
    if invocation.user_id != actor.user.pk:
        raise ServiceError("Only the person who asked can stop this answer.")
    with transaction.atomic():
        if Invocation.objects.filter(pk=invocation.pk, status=MessageStatus.QUEUED, attempts=0).update(
            status=MessageStatus.CANCELLED, cancel_requested=True, finished_at=timezone.now()
        ):
            Message.objects.filter(pk=invocation.assistant_message_id).update(status=MessageStatus.CANCELLED)
            # It never ran: a zero-usage event, and its reservation is given back.
            metering.record_unrun_turn(invocation, outcome=MessageStatus.CANCELLED)
            transaction.on_commit(lambda: _publish_final(tenant, invocation, "cancelled", {}))
            return
        Invocation.objects.filter(pk=invocation.pk).exclude(status__in=FINAL_STATUSES).update(cancel_requested=True)
    if Invocation.objects.filter(pk=invocation.pk, status=MessageStatus.QUEUED, cancel_requested=True).exists():
        # Put back to wait for its retry: its attempts used what the provider charges for
        # (carried on the invocation), so it is not ended as never run. No claim takes it
        # now that it is stopped; it ends here, billed once for what they carried (turns._finish).
        from agents import turns

        turns.cancel_unclaimed(invocation.pk)


def _publish_final(tenant: Tenant, invocation, kind: str, data: dict) -> None:
    """The final event of a turn that ended without a worker (cancelled while queued, blocked
    on its question), so that its stream ends too; erased again if its conversation was
    deleted since the commit (streaming.erase_if_deleted)."""
    # An on_commit callback may run after the caller's tenant context is gone
    # (an outer transaction committing later), so it names its tenant itself.
    from agents import streaming

    with tenant_context(tenant):
        streaming.publish_final(invocation.pk, kind, data, conversation_id=invocation.conversation_id)


def _erase_relay(tenant: Tenant, invocation_ids: list) -> None:
    from agents import streaming

    with tenant_context(tenant):  # an on_commit callback, as _publish_final
        streaming.erase(invocation_ids)


def set_feedback(actor: Actor, message: Message, value: int) -> None:
    _require_chat(actor)
    if value not in (-1, 0, 1):
        raise ServiceError("Feedback is -1, 0 or 1.")
    if message.role != Message.Role.ASSISTANT:
        raise ServiceError("Only answers take feedback.")
    owner = owned_conversations(actor.user).filter(pk=message.conversation_id).exists()
    if not owner:
        raise ServiceError("This is not your conversation.")
    Message.objects.filter(pk=message.pk).update(feedback=value)

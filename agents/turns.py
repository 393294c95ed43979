"""Running one chat turn in the worker (ARCHITECTURE.md §5, steps 2–4).

claim → resolve model, runtime and token → call the runtime with the tenant
context → relay deltas → finish (answer + invocation + usage in one
transaction). Every state change is a conditional update, so a duplicate or
late delivery of the same task cannot run a turn twice or bill it twice.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from datetime import timedelta
from decimal import Decimal

from celery.exceptions import SoftTimeLimitExceeded
from django.db import transaction
from django.utils import timezone

from agents import runtime_gateway, streaming, tracing
from agents.guardrails import enforce as guardrails
from agents.models import Invocation, Message, MessageStatus
from billing import metering
from tenants.models import Tenant, TenantStatus

log = logging.getLogger(__name__)

# A RUNNING turn whose worker vanished longer ago than this may be claimed again
# (the broker redelivers it: acks_late + reject_on_worker_lost).
STALE_AFTER = timedelta(seconds=180)
CANCEL_CHECK_SECONDS = 0.5
SHOW_EVERY = 64  # characters between updates of a redacted stream


# What the person reads when a turn fails in the worker for a reason of the worker's own.
TOOK_TOO_LONG = "The agent took too long to answer."
WENT_WRONG = "Something went wrong while answering. Try again."


class RetryLater(Exception):
    """A transient runtime failure; the task retries with backoff."""


# What the worker needs about a claimed turn, read in the claim itself: the invocation
# with its agent (and the agent's workload identity), conversation, user and question.
_CLAIM_JOINS = """
JOIN agents_agent a ON a.id = i.agent_id
LEFT JOIN identity_agentidentity ai ON ai.id = a.identity_id
JOIN agents_conversation c ON c.id = i.conversation_id AND c.tenant_id = i.tenant_id
LEFT JOIN tenants_user u ON u.id = i.user_id
JOIN agents_message um ON um.id = i.user_message_id AND um.tenant_id = i.tenant_id
JOIN tenants_tenant t ON t.id = i.tenant_id
"""
# Queued, or running/streaming under the lease of an attempt found dead (`dead_lease`, None
# otherwise: `= NULL` is never true): its worker vanished STALE_AFTER ago, or a redelivery
# found its lease dead (see _attempt_dead). Matching the exact lease makes the takeover a
# compare-and-swap: of two deliveries only one takes the turn, and never from an attempt
# that claimed it since; and the taker knows which attempt it took the turn from, so it
# carries what that attempt used (_dead_attempt_carry) in the claim itself (_CLAIM_CARRY_SET).
_CLAIMABLE = """
tenant_id = %(tenant)s AND id = %(invocation)s AND NOT cancel_requested
AND (status = 'queued' OR (status IN ('running', 'streaming') AND lease = %(dead_lease)s))
"""
_CLAIM_SET = (
    "status = 'running', started_at = %(now)s, attempts = attempts + 1, runtime = %(runtime)s, lease = %(lease)s"
)
# A takeover's claim also carries what the dead attempt used, in the same statement: were
# the carry a write of its own after the claim, a taker killed between the two would leave
# that attempt unbilled for good, since the next taker reads the relay for the attempt it
# takes the turn from (the killed taker's, which streamed nothing), not for the one before.
# A first claim carries nothing and sends the statement without it.
_CLAIM_CARRY_SET = (
    ", carried_input_tokens = carried_input_tokens + %(carry_input)s"
    ", carried_output_tokens = carried_output_tokens + %(carry_output)s"
    ", carried_tool_calls = carried_tool_calls + %(carry_tool_calls)s"
    ", carried_runtime_seconds = carried_runtime_seconds + %(carry_seconds)s"
    ", carried_estimated = carried_estimated OR %(carry_estimated)s"
)
# On PostgreSQL the claim also reads what runtime_gateway.turn_facts would read next (the
# member's role, the agent's grant, the conversation so far, oldest first), saving the
# turn a round trip on its way to the runtime. SQLite, with no round trips, reads them
# in turn_facts.
_CLAIM_FACTS_POSTGRES = f"""
(SELECT m.role FROM tenants_membership m JOIN tenants_user mu ON mu.id = m.user_id
    WHERE m.tenant_id = i.tenant_id AND m.user_id = i.user_id AND mu.is_active),
EXISTS (SELECT 1 FROM identity_agentgrant g WHERE g.tenant_id = i.tenant_id AND g.agent_id = a.identity_id),
(SELECT json_agg(json_build_array(h.role, h.content) ORDER BY h.created_at, h.id) FROM (
    SELECT role, content, created_at, id FROM agents_message
    WHERE tenant_id = i.tenant_id AND conversation_id = i.conversation_id AND status = 'done'
        AND created_at < um.created_at
    ORDER BY created_at DESC, id DESC LIMIT {runtime_gateway.HISTORY_MESSAGES}
) h)
"""  # noqa: S608 (a constant)
# And the price book in force now with its prices for the turn's model (the row of
# billing.accounting.prices_statement), and when the next book takes effect: until then
# these are the prices in force, and the finish needs no query for them (unless a book
# is published meanwhile, which the finish's own statement notices: _FINAL_STATE_PRICED).
_CLAIM_PRICES_POSTGRES = """
pb.version, pb.per_tool_call, pb.per_runtime_second, pm.per_1k_input, pm.per_1k_output,
(SELECT min(effective_from) FROM billing_pricebook WHERE effective_from > %(now)s)
"""
_CLAIM_PRICES_JOINS = """
LEFT JOIN LATERAL (
    SELECT id, version, per_tool_call, per_runtime_second FROM billing_pricebook
    WHERE effective_from <= %(now)s ORDER BY effective_from DESC, version DESC LIMIT 1
) pb ON true
LEFT JOIN billing_modelprice pm ON pm.price_book_id = pb.id AND pm.model_key = i.model_key
"""
_claim_reader = None


def _reader():
    global _claim_reader
    if _claim_reader is None:
        from agents.models import Agent, Conversation
        from portal.db import sql
        from tenants.identity.models import AgentIdentity
        from tenants.models import User

        _claim_reader = sql.RowReader(
            [(Invocation, "i"), (Agent, "a"), (AgentIdentity, "ai"), (Conversation, "c"), (User, "u"), (Message, "um")]
        )
    return _claim_reader


def _lease() -> str:
    """This attempt's lease: the process running it, and a token of its own."""
    return f"{socket.gethostname()[:200]}:{os.getpid()}:{uuid.uuid4().hex[:16]}"


def _lease_lost(lease: str, redelivered: bool) -> bool:
    """Whether the attempt holding `lease` is certainly gone, so a new delivery may take the
    turn over at once instead of waiting STALE_AFTER (and the sweeper) with it.

    On this host: when its process no longer exists (a killed prefork child; its parent has
    reaped it before the broker redelivers). On another host the process cannot be asked;
    then only a delivery the broker marks redelivered takes over: Redis marks a message it
    restores, and it restores one only when the worker rejected it because the child running
    it died (task_reject_on_worker_lost), or once the visibility timeout, above the task's
    hard time limit (portal.settings), has passed. The filesystem broker, a single host's,
    does not mark redeliveries (kombu's virtual transport sets the flag outside the
    delivery_info Celery reads): the process check covers it."""
    host, _, rest = lease.partition(":")
    pid, _, _ = rest.partition(":")
    if not host or not pid.isdigit():
        return redelivered  # claimed before leases existed
    if host != socket.gethostname()[:200]:
        return redelivered
    if int(pid) == os.getpid():
        return False  # this process: it is running that attempt (a thread pool) or ran it to its end
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # someone else's process now holds the number: alive, but not ours
    return False


def _attempt_dead(lease: str, started_at, redelivered: bool) -> bool:
    """Whether the attempt holding `lease`, claimed at `started_at`, is gone: claimed longer
    ago than STALE_AFTER (above the task's hard time limit, so no attempt still runs), or
    its lease found lost (_lease_lost)."""
    if started_at is not None and started_at < timezone.now() - STALE_AFTER:
        return True
    return _lease_lost(lease, redelivered)


def _claim(
    tenant: Tenant, invocation_id, dead_lease: str | None = None, carry: dict | None = None
) -> Invocation | None:
    """Mark the invocation and its answer running, or None if it is not ours to run.

    A conditional UPDATE: of two deliveries of the same task only one claims it. On
    PostgreSQL the claim, the answer's status and the read of everything the turn
    needs are one statement, sent with the tenant settings in one round trip
    (portal.db.postgresql); on SQLite three statements in one transaction.
    `carry`: what the attempt holding `dead_lease` used (_dead_attempt_carry), carried
    on the invocation by the claim's own UPDATE, so only if the claim takes the turn."""
    from portal.db import sql

    now = timezone.now()
    reader = _reader()
    params = {
        "tenant": tenant.pk,
        "invocation": sql.uuid(invocation_id),
        "now": sql.dt(now),
        "runtime": runtime_gateway.runtime_kind(tenant),
        "lease": _lease(),
        "dead_lease": dead_lease,
    }
    claim_set = _CLAIM_SET
    if carry:
        claim_set += _CLAIM_CARRY_SET
        params.update(carry)
    if sql.connection.vendor == "postgresql":
        # Not durable: if the database crashed right after, the turn would be queued
        # again, and the broker redelivers the task (acks_late), which claims it again.
        row = sql.one_not_durable(
            f"""
            WITH i AS (UPDATE agents_invocation SET {claim_set} WHERE {_CLAIMABLE} RETURNING *),
            answer AS (
                UPDATE agents_message SET status = 'running', content = ''
                WHERE tenant_id = %(tenant)s AND id IN (SELECT assistant_message_id FROM i)
            )
            SELECT {reader.columns}, t.status, {_CLAIM_FACTS_POSTGRES}, {_CLAIM_PRICES_POSTGRES}
            FROM i {_CLAIM_JOINS} {_CLAIM_PRICES_JOINS}
            """,  # noqa: S608 (constant fragments; values are parameters)
            params,
        )
    else:
        with transaction.atomic():
            claimed = sql.one(
                f"UPDATE agents_invocation SET {claim_set} WHERE {_CLAIMABLE} RETURNING assistant_message_id",  # noqa: S608
                params,
            )
            if claimed is None:
                return None
            sql.run(
                "UPDATE agents_message SET status = 'running', content = '' WHERE tenant_id = %s AND id = %s",
                [tenant.pk, claimed[0]],
            )
            row = sql.one(
                f"SELECT {reader.columns}, t.status FROM agents_invocation i {_CLAIM_JOINS} "  # noqa: S608
                "WHERE i.tenant_id = %(tenant)s AND i.id = %(invocation)s",
                params,
            )
    if row is None:
        return None
    invocation, agent, identity, conversation, user, question = reader.read(row)
    facts = prices = None
    if sql.connection.vendor == "postgresql":
        row, (role, allowed, history), price_row, next_book_from = row[:-9], row[-9:-6], row[-6:-1], row[-1]
        facts = runtime_gateway.TurnFacts(
            role=role, agent_allowed=bool(allowed), history=[{"role": r, "content": c} for r, c in history or []]
        )
        prices = (price_row, next_book_from)
    # The tenant's status as of the claim: the task's Tenant may be a few seconds old
    # (tenants.tasks.cached_tenant), and a suspension must stop the turn at once.
    tenant.status = row[-1]
    agent.identity = identity
    invocation.agent, invocation.conversation, invocation.user = agent, conversation, user
    invocation.user_message = question
    invocation._facts = facts  # runtime_gateway.invoke reads them itself when None
    invocation._prices = prices  # _finish reads them itself when None
    return invocation


def _unclaimed_state(invocation_id) -> tuple | None:
    """(status, cancel_requested, lease, started_at, attempts, user_message_id) of a turn this
    delivery did not claim, or None when it is gone."""
    return (
        Invocation.objects.filter(pk=invocation_id)
        .values_list("status", "cancel_requested", "lease", "started_at", "attempts", "user_message_id")
        .first()
    )


def run(tenant: Tenant, invocation_id: str, *, final_attempt: bool = False, redelivered: bool = False) -> str:
    """Run the turn, if it is this delivery's to run. `redelivered`: the broker says this
    delivery is a redelivery (Celery's request.delivery_info), see _lease_lost."""
    claim_started, claim_clock = time.time(), time.perf_counter()
    invocation = _claim(tenant, invocation_id)
    if invocation is None:
        current = _unclaimed_state(invocation_id)
        if (
            current
            and current[0] in (MessageStatus.RUNNING, MessageStatus.STREAMING)
            and _attempt_dead(current[2], current[3], redelivered)
        ):
            if current[1]:
                # Stopped, and its worker was killed before it noticed: no claim takes a
                # stopped turn, so this delivery ends it, cancelled, billed for what the dead
                # attempt streamed (or it would wait minutes for the sweeper).
                log.info("turn %s stopped and its worker (%s) is gone: cancelled", invocation_id, current[2])
                return _cancel_dead_attempt(invocation_id, current[2], current[3])
            # Its worker was killed and the broker gave the task back (or it vanished longer
            # ago than STALE_AFTER): run it again now, as a new attempt (its stream restarts
            # with a "reset"), carrying what the dead attempt used into the turn's one usage
            # event, rather than leave it holding its concurrency slot until the sweeper fails it.
            # What the dead attempt used is read first and carried by the claim itself; if
            # another delivery takes the turn first, this claim fails and the reading is dropped.
            carry = _dead_attempt_carry(invocation_id, current[4], current[3], current[5])
            dead_lease = current[2]
            invocation = _claim(tenant, invocation_id, dead_lease=dead_lease, carry=carry)
            if invocation is not None:
                log.warning("turn %s: its worker (%s) is gone: taken over", invocation_id, dead_lease)
            else:
                # Lost: since the look above another delivery took the turn over, it ended, or
                # it was stopped (no claim takes a stopped turn). The row as it is now says
                # which; what the look saw would be answered as the turn's status, and a stop
                # made meanwhile would wait for the sweeper with no worker behind it.
                current = _unclaimed_state(invocation_id)
                if (
                    current
                    and current[0] in (MessageStatus.RUNNING, MessageStatus.STREAMING)
                    and current[1]
                    and current[2] == dead_lease
                ):
                    log.info(
                        "turn %s stopped as it was taken over from its worker (%s), gone: cancelled",
                        invocation_id,
                        dead_lease,
                    )
                    return _cancel_dead_attempt(invocation_id, dead_lease, current[3])
    if invocation is None:
        if current and current[:2] == (MessageStatus.QUEUED, True):
            # Stopped while it waited for a retry: no claim takes a stopped turn, so this
            # delivery ends it (cancelled, billed for what the attempts put back used:
            # carried on the invocation), or it would wait for the sweeper.
            log.info("turn %s stopped while queued for a retry: cancelled", invocation_id)
            return _end_unclaimed(invocation_id, MessageStatus.CANCELLED)
        log.info("turn %s not claimed (status %s): nothing to do", invocation_id, current and current[0])
        return str(current[0] if current else "missing")

    if tenant.status != TenantStatus.ACTIVE:
        reason = "This organisation's access is suspended. Ask its administrator."
        if _finish(invocation, "", MessageStatus.FAILED, {}, [], [], time.monotonic(), error=reason) is not None:
            streaming.publish_final(
                invocation.pk, "error", {"message": reason}, conversation_id=invocation.conversation_id
            )
        return str(MessageStatus.FAILED)

    trace = tracing.TurnTrace(tenant, invocation_id=invocation.pk, spans=invocation.trace)
    if invocation.attempts == 1:
        wait = (invocation.started_at - invocation.queued_at).total_seconds()
        trace.add("turn.queue_wait", invocation.queued_at.timestamp(), wait, {"queue": invocation.queue})
    trace.add("turn.claim", claim_started, time.perf_counter() - claim_clock, {"attempt": invocation.attempts})
    # A first attempt's stream is empty (only a claimed turn publishes), so it starts at 0
    # without asking the relay; a retry continues after what the earlier attempt sent.
    # The conversation may be deleted once the finish commits, before the final event goes
    # out: that write then erases the stream again (streaming.erase_if_deleted).
    publisher = streaming.Publisher(
        invocation.pk,
        time.monotonic,
        start=0 if invocation.attempts == 1 else None,
        conversation_id=invocation.conversation_id,
    )
    if invocation.attempts > 1:
        publisher.emit("reset", {"attempt": invocation.attempts})
    # The skills cache is read in the same Redis round trip as the status (if both are Redis):
    # each trip before the runtime call is a wait between the person's question and its answer.
    from agents.skills import services as skill_services

    invocation._skills_cached = publisher.emit(
        "status", {"status": "running"}, read=skill_services.turn_cache_keys(tenant)
    )
    started = time.monotonic()
    answer: list[str] = []
    citations: list[dict] = []
    tool_calls: list[dict] = []
    usage: dict = {}
    next_cancel_check = time.monotonic() + CANCEL_CHECK_SECONDS
    cancelled = False
    guard = guardrails.OutputGuard(tenant, invocation)
    guard_seconds = 0.0
    blocked = None
    # With PII redaction on answers, the browser gets the redacted, stable part of the
    # answer every SHOW_EVERY characters instead of each raw delta (guard.shown()); else the
    # deltas as the output check clears them (guard.cleared). `shown`: what it has so far.
    holds_back = None  # read at the first delta: the policy lookup stays off the path to the runtime
    shown, shown_at = "", 0
    runtime_span = {"started": time.time(), "clock": time.perf_counter(), "first_token_ms": None}
    failing = ""  # the reason the turn fails, once it does

    def end(status: str, reason: str = "") -> str:
        """The turn's last step, however it ended: the output guardrails have the last word on
        what is stored and shown of its answer, a failed or stopped turn's answer so far too.
        A violation mid-stream (or in the whole answer) replaces what was shown, and the
        stored answer is the enforced one."""
        nonlocal guard_seconds, shown
        raw = "".join(answer)
        if status == MessageStatus.FAILED and not raw:
            verdict = guardrails.OutputVerdict(text="")  # no answer to check
        else:
            checking, checking_wall = time.perf_counter(), time.time()
            verdict = blocked or guard.final(raw)
            guard_seconds += time.perf_counter() - checking
            trace.add(
                "turn.guardrails.output",
                checking_wall,
                guard_seconds,
                {"checks": getattr(guard, "checks", 0), "blocked": bool(verdict.blocked)},
            )
        if verdict.blocked and status != MessageStatus.FAILED:
            status, reason = MessageStatus.BLOCKED, verdict.message
        elif not verdict.blocked and verdict.text:
            shown = _show(publisher, shown, verdict.text)  # the rest (not relayed yet), as it is stored
        message_id = _finish(
            invocation,
            verdict.text,
            status,
            usage,
            citations,
            tool_calls,
            started,
            error=reason,
            checks=guard.checks,
            trace=trace,
            generated=raw,
            blocked=verdict.blocked,
        )
        if status == MessageStatus.BLOCKED:
            publisher.emit("blocked", {"message_id": message_id, "text": verdict.text, "message": verdict.message})
        elif status == MessageStatus.FAILED:
            # A failed turn stays failed, for the reason it failed; only its answer so far is
            # the enforced one, and what was shown of it is replaced by that (the block
            # message, shown as such: "blocked").
            if verdict.blocked:
                publisher.emit("replace", {"text": verdict.text, "blocked": True}, defer=True)
            publisher.emit("error", {"message": reason})
        else:
            publisher.emit("cancelled" if status == MessageStatus.CANCELLED else "done", {"message_id": message_id})
        return str(status)

    def failed(reason: str) -> str:
        """The turn fails with `reason`, keeping its answer so far (as the output guardrails
        leave it) and billed for what it used."""
        nonlocal failing
        failing = reason
        return end(MessageStatus.FAILED, reason)

    def interrupted(exc: Exception) -> str:
        """Something broke after the runtime loop (the final check, the finish, a write to the
        relay) or while the turn failed: it still ends, failed, billed for what the runtime
        reported (or the estimate of what it generated), and none of its answer is stored: it
        may not have passed the output check. If the finish had committed before the break,
        its conditional update makes this write nothing, so nothing is billed twice; the
        browser is then told how the turn ended, as that finish would have done."""
        reason = _interruption_reason(invocation, exc, started)
        message_id = _finish(
            invocation,
            "",
            MessageStatus.FAILED,
            usage,
            [],
            tool_calls,
            started,
            error=failing or reason,
            checks=guard.checks,
            trace=trace,
            generated="".join(answer),
        )
        if message_id is None:
            return _tell_how_it_ended(publisher, invocation)
        publisher.emit("error", {"message": failing or reason})
        return str(MessageStatus.FAILED)

    try:
        try:
            for event in runtime_gateway.invoke(tenant, invocation):
                kind = event.get("type")
                if kind == "delta":
                    if not answer:
                        runtime_span.update(_runtime_called(invocation, trace, runtime_span))
                        runtime_span["first_token_ms"] = round((time.perf_counter() - runtime_span["clock"]) * 1000, 3)
                        _mark_streaming(invocation)
                        publisher.emit("status", {"status": "streaming"}, defer=True)
                    if holds_back is None:
                        holds_back = guard.holds_back
                    answer.append(event.get("text", ""))
                    raw = "".join(answer)
                    checking = time.perf_counter()
                    blocked = guard.check(raw)
                    guard_seconds += time.perf_counter() - checking
                    if blocked is not None:
                        break
                    if not holds_back:
                        # What the output check has cleared: each delta as it comes, unless the
                        # policy can block the text (then what the check passed, see check()).
                        if guard.cleared > len(shown):
                            publisher.delta(raw[len(shown) : guard.cleared])
                            shown = raw[: guard.cleared]
                    elif len(raw) - shown_at >= SHOW_EVERY:
                        checking = time.perf_counter()
                        shown, shown_at = _show(publisher, shown, guard.shown(raw)), len(raw)
                        guard_seconds += time.perf_counter() - checking
                elif kind == "citation":
                    # Shown and stored with the answer: it passes the output policy too.
                    checking = time.perf_counter()
                    citations.append(guard.citation({k: v for k, v in event.items() if k != "type"}))
                    guard_seconds += time.perf_counter() - checking
                    publisher.emit("citation", citations[-1])
                elif kind == "tool_call":
                    # Shown and stored with the answer: its arguments pass the output policy too.
                    checking = time.perf_counter()
                    tool_calls.append(guard.tool_call({k: v for k, v in event.items() if k != "type"}))
                    guard_seconds += time.perf_counter() - checking
                    publisher.emit("tool_call", tool_calls[-1])
                elif kind == "usage":
                    usage = event
                elif kind == "error":
                    # Shown and stored: the runtime's words pass the output policy too.
                    checking = time.perf_counter()
                    message = guard.error_message(str(event.get("message") or ""))
                    guard_seconds += time.perf_counter() - checking
                    raise runtime_gateway.RuntimeRejected(message or guardrails.WITHHELD_ERROR)
                if time.monotonic() >= next_cancel_check:
                    next_cancel_check = time.monotonic() + CANCEL_CHECK_SECONDS
                    if Invocation.objects.filter(pk=invocation.pk, cancel_requested=True).exists():
                        cancelled = True
                        break
            # No flush here: the text still pending goes out with the turn's final event, in
            # one write, a moment later (once the answer is stored).
        except runtime_gateway.TransientRuntimeError as exc:
            publisher.flush()
            # Back to the queue, and the retry claims it again; but not a turn the person has
            # stopped: no claim takes a stopped turn (_CLAIMABLE), so it would stay queued,
            # unbilled, holding its reservation and blocking its conversation. It ends here,
            # cancelled, with what it used so far (below, as any stopped turn).
            # The attempt put back has used what the provider charges for (the tokens it
            # streamed, its tool calls, its runtime): carried on the invocation, and the
            # turn's one usage event adds it, whichever attempt ends the turn.
            if not final_attempt and Invocation.objects.filter(
                pk=invocation.pk, status__in=[MessageStatus.RUNNING, MessageStatus.STREAMING], cancel_requested=False
            ).update(
                status=MessageStatus.QUEUED,
                **_carry(invocation, usage, "".join(answer), tool_calls, _seconds_since(started)),
            ):
                raise RetryLater(str(exc)) from exc
            cancelled = Invocation.objects.filter(pk=invocation.pk, cancel_requested=True).exists()
            if not cancelled:
                # The last attempt (or a turn no longer ours to put back: the finish's
                # conditional update then changes nothing).
                # The detail (URLs, errno) is for operators' logs; the person sees a plain reason.
                log.error("turn %s: runtime unavailable after retries: %s", invocation.pk, exc)
                return failed("The agent runtime is unavailable. Try again in a moment.")
        except runtime_gateway.RuntimeRejected as exc:
            publisher.flush()
            return failed(str(exc)[:500])
        except Exception as exc:
            # The soft time limit (raised wherever the worker is, usually waiting for the
            # runtime) or a bug: the turn fails, billed for what it used until then (tokens,
            # estimated if the runtime reported none; tool calls; runtime seconds), and its
            # answer so far is kept.
            return failed(_interruption_reason(invocation, exc, started))

        if runtime_span["first_token_ms"] is None:  # no text came: the call still happened
            runtime_span.update(_runtime_called(invocation, trace, runtime_span))
        _runtime_span(trace, runtime_span, kind=invocation.runtime, deltas=len(answer))
        return end(MessageStatus.CANCELLED if cancelled else MessageStatus.DONE)
    except RetryLater:
        raise
    except Exception as exc:
        # Raised after the runtime loop or in a failure path (the soft time limit, a bug, the
        # guardrail check itself failing). agents.tasks.run_turn's handlers remain the last
        # resort for what is raised before (the claim: nothing used, nothing to bill) or here.
        return interrupted(exc)


def _interruption_reason(invocation, exc: Exception, started: float) -> str:
    """What the person reads when the worker's own trouble cuts a turn short, logged."""
    if isinstance(exc, SoftTimeLimitExceeded):
        log.warning("turn %s: soft time limit reached after %.1f s", invocation.pk, time.monotonic() - started)
        return TOOK_TOO_LONG
    log.error("turn %s failed unexpectedly", invocation.pk, exc_info=exc)
    return WENT_WRONG


def _tell_how_it_ended(publisher, invocation) -> str:
    """The final event of a turn that has ended already (its finish committed, and then the
    worker was interrupted before it said so): as stored. A duplicate of another's final
    event, if someone else ended it, changes nothing for a reader."""
    status, error = Invocation.objects.filter(pk=invocation.pk).values_list("status", "error").first() or (
        MessageStatus.FAILED,
        "",
    )
    message_id = invocation.assistant_message_id
    if status == MessageStatus.BLOCKED:
        publisher.emit("blocked", {"message_id": message_id, "message": error})
    elif status in (MessageStatus.DONE, MessageStatus.CANCELLED):
        publisher.emit(str(status), {"message_id": message_id})
    else:
        publisher.emit("error", {"message": error})
    return str(status)


def _mark_streaming(invocation: Invocation) -> None:
    """The first token arrived: the invocation and its answer say so (one statement and
    round trip on PostgreSQL, see _claim)."""
    from portal.db import sql

    params = {"tenant": invocation.tenant_id, "invocation": sql.uuid(invocation.pk), "now": sql.dt(timezone.now())}
    if sql.connection.vendor == "postgresql":
        # Not durable: losing the mark in a database crash loses nothing (finish sets the status).
        sql.one_not_durable(_MARK_STREAMING_POSTGRES, params)
        return
    with transaction.atomic():
        if sql.run(_MARK_INVOCATION_STREAMING, params):
            sql.run(
                "UPDATE agents_message SET status = 'streaming' WHERE tenant_id = %s AND id = %s",
                [invocation.tenant_id, invocation.assistant_message_id],
            )


_MARK_INVOCATION_STREAMING = """
UPDATE agents_invocation SET status = 'streaming', first_token_at = %(now)s
WHERE tenant_id = %(tenant)s AND id = %(invocation)s AND status = 'running'
"""
_MARK_STREAMING_POSTGRES = f"""
WITH i AS ({_MARK_INVOCATION_STREAMING} RETURNING assistant_message_id)
UPDATE agents_message SET status = 'streaming'
WHERE tenant_id = %(tenant)s AND id IN (SELECT assistant_message_id FROM i)
"""  # noqa: S608 (constant fragments)


def estimate_tokens(text: str) -> int:
    """The documented estimate when a provider reports no usage: ⌈characters / 4⌉."""
    return (len(text) + 3) // 4


def _show(publisher, shown: str, safe: str) -> str:
    """Send what is newly safe to show. The redacted prefix only grows, except when a value
    straddling the held-back edge turns out to be an entity: then the text is replaced."""
    if safe.startswith(shown):
        if len(safe) > len(shown):
            publisher.delta(safe[len(shown) :])
        return safe
    publisher.emit("replace", {"text": safe})
    return safe


def _runtime_called(invocation, trace, runtime_span: dict) -> dict:
    """When the runtime was really called: runtime_gateway.invoke notes it on the invocation
    after minting the token and building the request (that part becomes its own span)."""
    called = getattr(invocation, "_runtime_called", None)
    if called is None or "prepared" in runtime_span:
        return {"prepared": True}
    wall, clock = called
    trace.add("turn.prepare", runtime_span["started"], clock - runtime_span["clock"], {"token": "act-on-behalf"})
    return {"started": wall, "clock": clock, "prepared": True}


def _runtime_span(trace, runtime_span: dict, **attributes) -> None:
    """The runtime call, from the request to its last event (first token as an attribute)."""
    attributes["first_token_ms"] = runtime_span["first_token_ms"]
    trace.add("turn.runtime", runtime_span["started"], time.perf_counter() - runtime_span["clock"], attributes)


def _finish(
    invocation,
    text,
    status,
    usage,
    citations,
    tool_calls,
    started,
    error: str = "",
    checks: int = 0,
    trace: tracing.TurnTrace | None = None,
    generated: str | None = None,
    blocked: bool = False,
) -> int | None:
    """Final state, stored answer and the one usage event, in one transaction (on
    PostgreSQL, outside a caller's transaction: one query string, one round trip).

    `generated`: the answer as the runtime produced it, when the stored `text` is not that
    (redacted, blocked or withheld by the output guardrails); a turn without reported
    usage is billed by the estimate of what was generated, not of what is stored.
    `blocked`: the stored text is the guardrails' block message (the page shows it as such).

    Returns the answer's message id, or None when the turn had already ended."""
    generated = text if generated is None else generated
    input_tokens, output_tokens, estimated = _attempt_tokens(invocation, usage, generated)
    # And what earlier attempts used (retried, or their worker died): one event for the turn.
    input_tokens += invocation.carried_input_tokens
    output_tokens += invocation.carried_output_tokens
    estimated = estimated or invocation.carried_estimated
    tool_call_count = len(tool_calls) + invocation.carried_tool_calls
    runtime_seconds = Decimal(f"{time.monotonic() - started:.3f}") + Decimal(invocation.carried_runtime_seconds)
    from agents.runtime_gateway import model_offering
    from billing import accounting
    from portal.db import sql

    offering = model_offering(invocation)
    now = timezone.now()
    json_field = Message._meta.get_field("citations")
    final_state = (
        _FINAL_STATE,
        {
            "status": str(status),
            "now": sql.dt(now),
            "input": input_tokens,
            "output": output_tokens,
            "tool_calls": tool_call_count,
            "estimated": estimated,
            "error": error,
            "trace": json_field.get_db_prep_save(trace.spans, sql.connection) if trace else None,
            "tenant": invocation.tenant_id,
            "invocation": sql.uuid(invocation.pk),
        },
    )
    answer = (
        "UPDATE agents_message SET content = %s, status = %s, citations = %s, tool_calls = %s, error = %s, "
        "blocked_by_guardrails = %s WHERE tenant_id = %s AND id = %s",
        [
            text,
            str(status),
            json_field.get_db_prep_save(citations, sql.connection),
            json_field.get_db_prep_save(tool_calls, sql.connection),
            error,
            blocked,
            invocation.tenant_id,
            invocation.assistant_message_id,
        ],
    )
    usage_record = {
        "outcome": str(status),
        "offering": offering,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "tool_calls": tool_call_count,
        "runtime_seconds": runtime_seconds,
        "estimated": estimated,
        "guardrail_checks": checks + invocation.input_guardrail_checks,
        "now": now,
    }
    if sql.connection.vendor == "postgresql" and sql.connection.get_autocommit():
        # One query string, so one round trip and one implicit transaction: the final
        # state, the answer and the usage (metering.record_turn). Whatever holds a row
        # lock (the tenant's month row, the day's roll-up) holds it only while the string
        # runs and commits, never across a round trip. The answer and the usage are
        # written only if this string's own UPDATE ended the turn ("finished at our now").
        ended_here = (
            "EXISTS (SELECT 1 FROM agents_invocation WHERE tenant_id = %s AND id = %s AND finished_at = %s)",
            [invocation.tenant_id, sql.uuid(invocation.pk), sql.dt(now)],
        )
        guarded_answer = (f"{answer[0]} AND {ended_here[0]}", answer[1] + ended_here[1])
        # The event is priced by the book in force at `now`, as on SQLite (and as
        # accounting.price_book_at(event.created_at) answers). The prices come from the
        # claim's reading while it holds, and the string ends the turn only if the book in
        # force at `now` is still the one they came from: a book published (or backdated)
        # since makes it write nothing, and only then are the prices read again.
        price_row = _price_row_in_force(invocation, now)
        while True:
            book = price_row[0] if price_row else None
            priced_state = (_FINAL_STATE_PRICED, {**final_state[1], "book": book or 0})
            event = metering.record_turn(
                invocation,
                **usage_record,
                prices=accounting.prices_from_row(price_row, offering),
                together_with=[priced_state, guarded_answer],
                only_if=ended_here,
            )
            if event is not None:
                return invocation.assistant_message_id
            # Nothing written: the turn had ended already (someone else finished it, e.g.
            # cancelled while queued), or the book in force at `now` is another one.
            price_row_now = sql.one(*accounting.prices_statement(invocation.model_key, now))
            if (price_row_now[0] if price_row_now else None) == book:
                return None
            price_row = price_row_now
    with transaction.atomic():
        # The final state (only if the turn has not ended already) and the prices in force.
        ended, price_row = sql.batch([final_state, accounting.prices_statement(invocation.model_key, now)])
        if ended is None:
            return None  # someone else finished it (e.g. cancelled while queued)
        metering.record_turn(
            invocation,
            **usage_record,
            prices=accounting.prices_from_row(price_row, offering),
            together_with=[answer],
        )
    return invocation.assistant_message_id


def _attempt_tokens(invocation, usage: dict, generated: str) -> tuple[int, int, bool]:
    """An attempt's tokens in and out, and whether they are estimated: as the runtime
    reported them, or, when it reported none but did answer, estimated from the answer."""
    input_tokens = int(usage.get("input_tokens") or 0)
    output_tokens = int(usage.get("output_tokens") or 0)
    estimated = bool(usage.get("estimated", False)) or (not usage and bool(generated))
    if not usage and generated:
        # The provider said nothing about usage but did answer: estimate, flagged as such.
        output_tokens = estimate_tokens(generated)
        input_tokens = estimate_tokens(invocation_prompt_text(invocation))
    return input_tokens, output_tokens, estimated


def _carry(invocation, usage: dict, generated: str, tool_calls: list, seconds: Decimal) -> dict:
    """The update that carries an abandoned attempt's usage on its invocation (see _finish):
    its tokens, tool calls and `seconds` of runtime."""
    from django.db.models import F

    input_tokens, output_tokens, estimated = _attempt_tokens(invocation, usage, generated)
    carried = {
        "carried_input_tokens": F("carried_input_tokens") + input_tokens,
        "carried_output_tokens": F("carried_output_tokens") + output_tokens,
        "carried_tool_calls": F("carried_tool_calls") + len(tool_calls),
        "carried_runtime_seconds": F("carried_runtime_seconds") + seconds,
    }
    if estimated:
        carried["carried_estimated"] = True
    return carried


def _seconds_since(started: float) -> Decimal:
    return Decimal(f"{time.monotonic() - started:.3f}")


def _dead_attempt(invocation_id, attempt: int, started_at) -> tuple[str, list[dict], Decimal] | None:
    """What attempt number `attempt`, whose worker died, used, as far as it can be known: the
    text and the tool calls it streamed (the relay's, since its reset) and its runtime, from its
    claim until now, at most the task's hard time limit (no attempt outlives it). None
    when the relay cannot be read."""
    from agents.tasks import TURN_TIME_LIMIT

    try:
        streamed, tool_calls = streaming.attempt_streamed(invocation_id, attempt)
    except Exception:  # the relay (Redis) unreachable
        log.warning("turn %s: could not read what its dead attempt streamed", invocation_id, exc_info=True)
        return None
    seconds = 0.0
    if started_at is not None:
        seconds = min(max((timezone.now() - started_at).total_seconds(), 0.0), float(TURN_TIME_LIMIT))
    return streamed, tool_calls, Decimal(f"{seconds:.3f}")


def _dead_attempt_carry(invocation_id, attempt: int, started_at, user_message_id) -> dict | None:
    """What a takeover carries from attempt number `attempt`, whose worker died (claimed at
    `started_at`), as parameters of its claim (_CLAIM_CARRY_SET): what it used (_dead_attempt:
    its text, estimated, as nothing else will report it, with the question's estimate as its
    input; its tool calls; its runtime). Read before the claim, so before the taker's reset.
    None when there is nothing to carry, or the relay cannot be read: the turn runs all the same."""
    dead = _dead_attempt(invocation_id, attempt, started_at)
    if dead is None:
        return None
    streamed, tool_calls, seconds = dead
    if not streamed and not tool_calls and not seconds:
        return None
    # No usage was reported for it: estimated from its text, as any such attempt is.
    turn = Invocation(pk=invocation_id, user_message_id=user_message_id)
    input_tokens, output_tokens, estimated = _attempt_tokens(turn, {}, streamed)
    return {
        "carry_input": input_tokens,
        "carry_output": output_tokens,
        "carry_tool_calls": len(tool_calls),
        "carry_seconds": seconds,
        "carry_estimated": estimated,
    }


def _cancel_dead_attempt(invocation_id, lease: str, started_at) -> str:
    """End as cancelled a stopped turn whose attempt holding `lease` died: billed once
    (_finish's conditional update) for what that attempt used (_dead_attempt) and what
    earlier attempts carried. Nothing if it has ended already."""
    invocation = Invocation.objects.select_related("agent").filter(pk=invocation_id, lease=lease).first()
    if invocation is None:
        return "missing"
    dead = _dead_attempt(invocation_id, invocation.attempts, started_at)
    streamed, tool_calls, seconds = dead or ("", [], Decimal(0))
    started = time.monotonic() - float(seconds)
    if _finish(invocation, "", MessageStatus.CANCELLED, {}, [], tool_calls, started, generated=streamed) is None:
        return str(Invocation.objects.filter(pk=invocation_id).values_list("status", flat=True).first())
    streaming.publish_final(invocation.pk, "cancelled", {}, conversation_id=invocation.conversation_id)
    return str(MessageStatus.CANCELLED)


# The final state of a turn that has not ended yet.
_FINAL_STATE = (
    "UPDATE agents_invocation SET status = %(status)s, finished_at = %(now)s, "
    "input_tokens = %(input)s, output_tokens = %(output)s, tool_call_count = %(tool_calls)s, "
    "usage_estimated = %(estimated)s, error = %(error)s, trace = COALESCE(%(trace)s, trace) "
    "WHERE tenant_id = %(tenant)s AND id = %(invocation)s "
    "AND status NOT IN ('done', 'failed', 'blocked', 'cancelled') RETURNING id"
)
# PostgreSQL: and only if the book in force at `now`, picked as accounting.prices_statement
# picks it, is the one the event's prices came from (`book`; 0: none, versions start at 1).
_FINAL_STATE_PRICED = _FINAL_STATE.replace(
    " RETURNING id",
    " AND COALESCE((SELECT version FROM billing_pricebook WHERE effective_from <= %(now)s "
    "ORDER BY effective_from DESC, version DESC LIMIT 1), 0) = %(book)s RETURNING id",
)


def _price_row_in_force(invocation, now):
    """A row of accounting.prices_statement for `now`: the claim's reading (agents.turns._claim)
    while no book that existed then has taken effect since, otherwise read again. A book
    published after the claim is not in the claim's reading: the finish checks for it."""
    from billing import accounting
    from portal.db import sql

    claimed = getattr(invocation, "_prices", None)
    if claimed is not None:
        price_row, next_book_from = claimed
        if next_book_from is None or now < next_book_from:
            return price_row
    return sql.one(*accounting.prices_statement(invocation.model_key, now))


def invocation_prompt_text(invocation: Invocation) -> str:
    return Message.objects.filter(pk=invocation.user_message_id).values_list("content", flat=True).first() or ""


def fail(invocation_id, reason: str) -> None:
    _end_unclaimed(invocation_id, MessageStatus.FAILED, reason)


def cancel_unclaimed(invocation_id) -> None:
    """End as cancelled a stopped turn no worker is running (waiting for its retry)."""
    _end_unclaimed(invocation_id, MessageStatus.CANCELLED)


def _current_attempt(invocation: Invocation) -> tuple[str, list[dict], Decimal]:
    """What the turn's current attempt used, as _dead_attempt knows it (its streamed text,
    tool calls and runtime), or nothing if it is not running or the relay cannot be read."""
    if invocation.status not in (MessageStatus.RUNNING, MessageStatus.STREAMING):
        return "", [], Decimal(0)
    return _dead_attempt(invocation.pk, invocation.attempts, invocation.started_at) or ("", [], Decimal(0))


def _end_unclaimed(invocation_id, status: str, reason: str = "") -> str:
    """End a turn no worker is running (or whose worker lost its state), with no answer;
    nothing if it has ended already. A turn whose attempt was running (its worker died
    mid-answer, or the sweeper found it stuck) is billed for what that attempt used, as a
    takeover carries it (_dead_attempt): the estimate of the text it streamed, flagged
    estimated like any estimate (the provider produced it, and no usage report will
    come), the tool calls it made and its runtime."""
    invocation = Invocation.objects.select_related("agent").filter(pk=invocation_id).first()
    if invocation is None:
        return "missing"
    generated, tool_calls, seconds = _current_attempt(invocation)
    started = time.monotonic() - float(seconds)
    if _finish(invocation, "", status, {}, [], tool_calls, started, error=reason, generated=generated) is not None:
        # Only the call that ended the turn says so: a worker that finished it first
        # has already published its own final event.
        # The conversation may have been deleted since the finish committed (erase_if_deleted).
        if status == MessageStatus.CANCELLED:
            streaming.publish_final(invocation.pk, "cancelled", {}, conversation_id=invocation.conversation_id)
        else:
            streaming.publish_final(
                invocation.pk, "error", {"message": reason}, conversation_id=invocation.conversation_id
            )
    return str(status)

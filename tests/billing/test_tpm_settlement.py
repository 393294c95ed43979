"""Tokens per minute: admission charges the turn's estimate, and the usage event settles
the bucket with what the turn really used (ARCHITECTURE §7), once per turn, in both
limiters (the database GCRA and the Redis script)."""

from __future__ import annotations

import logging
import time

import pytest
from django.conf import settings

from agents import services, turns
from agents.models import Invocation
from billing import limits
from billing.models import RateLimitState, UsageEvent
from tenants.context import tenant_context
from tests.billing.helpers import actor, ask, ask_and_run, run

# Committed for real: the Redis settlement runs after the commit, and on PostgreSQL the
# finish takes its production path (one query string outside a transaction).
pytestmark = pytest.mark.django_db(transaction=True)

TOKENS_PER_MINUTE = 6_000  # 10 ms per token: the clock moves a few tokens during a test


def set_tokens_per_minute(side, tokens_per_minute: int) -> None:
    tier = side.tenant.tier
    tier.tokens_per_minute = tokens_per_minute
    tier.concurrent_sessions = 10
    tier.save()
    side.tenant.refresh_from_db()


def charged(side, tokens_per_minute: int = TOKENS_PER_MINUTE) -> float:
    """The tokens the tenant's TPM bucket holds now: how far its TAT is ahead of now."""
    if settings.REDIS_URL:
        client, _ = limits._redis()
        raw = client.get(limits.redis_key(side.tenant.pk, "tpm"))
        seconds, now = client.time()
        tat = float(raw) if raw is not None else 0.0
        ahead = tat - (seconds + now / 1_000_000)
    else:
        with tenant_context(side.tenant):
            tat = RateLimitState.objects.filter(key="tpm").values_list("tat", flat=True).first() or 0.0
        ahead = tat - time.time()
    return max(0.0, ahead) * tokens_per_minute / limits.WINDOW_SECONDS


def estimate(catalogue, text="What is the refund window?") -> int:
    return limits.estimate_turn(catalogue.offering, text)[0]


def uses(runtime, input_tokens: int, output_tokens: int) -> None:
    runtime.events = [
        {"type": "delta", "text": "The refund window is 30 days."},
        {"type": "usage", "input_tokens": input_tokens, "output_tokens": output_tokens},
    ]


def test_it_charges_the_tokens_a_turn_used_beyond_its_estimate(world, catalogue, runtime, limiter):
    set_tokens_per_minute(world.a, TOKENS_PER_MINUTE)
    uses(runtime, 1200, 300)
    estimated = estimate(catalogue)
    assert estimated < 1500
    invocation = ask(world.a, catalogue.helpdesk)
    assert estimated - 50 <= charged(world.a) <= estimated
    assert run(world.a, invocation) == "done"
    # The bucket now holds the 1,500 tokens really used (less what a second or so let through).
    assert 1500 - 100 <= charged(world.a) <= 1500


def test_it_gives_back_the_tokens_a_turn_did_not_use(world, catalogue, runtime, limiter):
    set_tokens_per_minute(world.a, TOKENS_PER_MINUTE)
    uses(runtime, 40, 10)
    ask_and_run(world.a, catalogue.helpdesk)
    assert charged(world.a) <= 50


def test_turns_that_used_less_than_their_estimate_leave_room_for_more(world, catalogue, runtime, limiter):
    # Room for two estimates a minute; each turn uses a few tokens of its estimate.
    set_tokens_per_minute(world.a, 2 * estimate(catalogue))
    uses(runtime, 40, 10)
    for _ in range(4):
        assert ask_and_run(world.a, catalogue.helpdesk).status == "queued"
    with tenant_context(world.a.tenant):
        assert UsageEvent.objects.filter(outcome="done").count() == 4


def test_a_turn_that_used_more_than_its_estimate_holds_back_the_next(world, catalogue, runtime, limiter):
    # Room for two estimates a minute, but the first turn used 1,500 tokens.
    set_tokens_per_minute(world.a, 2 * estimate(catalogue) + 100)
    uses(runtime, 1200, 300)
    ask_and_run(world.a, catalogue.helpdesk)
    with pytest.raises(limits.LimitExceeded) as caught:
        ask(world.a, catalogue.helpdesk)
    assert (caught.value.status, caught.value.kind) == (429, "tpm")


def test_a_turn_cancelled_while_queued_gives_back_its_whole_estimate(world, catalogue, runtime, limiter):
    set_tokens_per_minute(world.a, TOKENS_PER_MINUTE)
    invocation = ask(world.a, catalogue.helpdesk)
    assert charged(world.a) > 0
    with tenant_context(world.a.tenant):
        services.cancel_turn(actor(world.a), invocation)
    assert charged(world.a) == 0


def test_a_turn_blocked_at_the_input_gives_back_its_whole_estimate(world, catalogue, runtime, limiter, monkeypatch):
    from agents.guardrails import enforce

    set_tokens_per_minute(world.a, TOKENS_PER_MINUTE)
    monkeypatch.setattr(
        "agents.guardrails.enforce.screen_input",
        lambda tenant, user, text: enforce.InputVerdict(
            text="[blocked]", blocked=True, message="Not allowed.", checks=1
        ),
    )
    assert ask(world.a, catalogue.helpdesk).status == "blocked"
    assert charged(world.a) == 0
    assert runtime.calls == []


def test_a_failed_turn_is_settled_with_what_it_used(world, catalogue, runtime, limiter):
    from agents.runtime_gateway import RuntimeRejected

    set_tokens_per_minute(world.a, TOKENS_PER_MINUTE)
    runtime.events = [RuntimeRejected("model refused")]
    invocation = ask(world.a, catalogue.helpdesk)
    assert run(world.a, invocation) == "failed"
    assert charged(world.a) == 0  # it used nothing


def test_a_replayed_finish_does_not_settle_twice(world, catalogue, runtime, limiter):
    set_tokens_per_minute(world.a, TOKENS_PER_MINUTE)
    uses(runtime, 1200, 300)
    invocation = ask_and_run(world.a, catalogue.helpdesk)
    settled = charged(world.a)
    for _ in range(3):
        assert run(world.a, invocation) == "done"  # a redelivered task
        with tenant_context(world.a.tenant):
            fresh = Invocation.objects.select_related("agent").get(pk=invocation.pk)
            turns._finish(fresh, "again", "done", {"input_tokens": 9000, "output_tokens": 9000}, [], [], 0)
    # Only the clock moved the bucket since (a debit of 17,000 tokens would show).
    assert settled - 100 <= charged(world.a) <= settled


def test_it_finishes_the_turn_when_redis_cannot_be_reached_to_settle(
    world, catalogue, runtime, limiter, monkeypatch, caplog
):
    if limiter != "redis":
        pytest.skip("the Redis limiter's failure")
    import redis

    set_tokens_per_minute(world.a, TOKENS_PER_MINUTE)
    uses(runtime, 1200, 300)
    invocation = ask(world.a, catalogue.helpdesk)

    class Unreachable:
        def register_script(self, text):
            def call(**kwargs):
                raise redis.ConnectionError("Redis is down")

            return call

    monkeypatch.setattr(limits, "_redis", lambda: (Unreachable(), None))
    with caplog.at_level(logging.WARNING, logger="billing.limits"):
        assert run(world.a, invocation) == "done"
    with tenant_context(world.a.tenant):
        assert UsageEvent.objects.get(invocation_id=invocation.pk).input_tokens == 1200
    warnings = [r for r in caplog.records if "could not settle" in r.getMessage()]
    assert len(warnings) == 1


def test_a_tier_change_before_the_finish_gives_back_only_what_the_turn_was_charged(world, catalogue, runtime, limiter):
    # Charged at 60,000 tokens a minute (1 ms a token); the tier then drops to 6,000 (10 ms a
    # token) and a second turn is charged its whole estimate at the new rate.
    set_tokens_per_minute(world.a, 60_000)
    uses(runtime, 40, 10)
    first = ask(world.a, catalogue.helpdesk)
    set_tokens_per_minute(world.a, TOKENS_PER_MINUTE)
    ask(world.a, catalogue.helpdesk)
    assert run(world.a, first) == "done"
    # The first turn gives back the milliseconds it was charged, less its 50 tokens: the
    # second turn's charge is still held (a credit at the new rate, ten times as much, took it).
    assert estimate(catalogue) - 10 <= charged(world.a) <= estimate(catalogue) + 60


def test_a_tier_change_before_the_finish_leaves_the_turn_charged_its_real_usage(world, catalogue, runtime, limiter):
    # Charged at 6,000 tokens a minute (10 ms a token); the tier then rises to 60,000.
    set_tokens_per_minute(world.a, TOKENS_PER_MINUTE)
    uses(runtime, 40, 10)
    first = ask(world.a, catalogue.helpdesk)
    set_tokens_per_minute(world.a, 60_000)
    assert run(world.a, first) == "done"
    # The 50 tokens it used, at the rate in force: not most of its estimate, held for a minute.
    assert charged(world.a, 60_000) <= 50

"""Every attempt of a turn is billed, in the turn's one usage event: an attempt retried after
a transient runtime error, or taken over from a dead worker, used tokens the provider charged."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import timedelta

import pytest
from django.utils import timezone

from agents import runtime_gateway, services, streaming, turns
from agents.models import Invocation, MessageStatus
from billing.models import UsageEvent
from tenants.context import tenant_context
from tests.billing.helpers import actor, ask, run

STREAMED = "x " * 2000  # 4,000 characters: ~1,000 tokens the provider produced and charged


def _prompt_tokens(side, invocation) -> int:
    with tenant_context(side.tenant):
        return turns.estimate_tokens(turns.invocation_prompt_text(invocation))


def _events(side, invocation):
    with tenant_context(side.tenant):
        return list(
            UsageEvent.objects.filter(invocation_id=invocation.pk).values_list(
                "input_tokens", "output_tokens", "tool_calls", "estimated", "outcome"
            )
        )


def test_tokens_streamed_by_an_attempt_that_is_retried_are_billed_with_the_turn(world, catalogue, runtime):
    runtime.events = [{"type": "delta", "text": STREAMED}, runtime_gateway.TransientRuntimeError("503")]
    invocation = ask(world.a, catalogue.helpdesk)
    with pytest.raises(turns.RetryLater):
        run(world.a, invocation)
    runtime.events = [{"type": "delta", "text": "ok"}, {"type": "usage", "input_tokens": 10, "output_tokens": 1}]
    assert run(world.a, invocation) == "done"

    prompt = _prompt_tokens(world.a, invocation)
    # One event: both attempts, estimated because the first attempt's part is.
    assert _events(world.a, invocation) == [(10 + prompt, 1 + turns.estimate_tokens(STREAMED), 0, True, "done")]
    with tenant_context(world.a.tenant):
        turn = Invocation.objects.get(pk=invocation.pk)
    assert (turn.input_tokens, turn.output_tokens, turn.usage_estimated) == (10 + prompt, 1001, True)


def test_reported_usage_of_every_retried_attempt_adds_up_unestimated(world, catalogue, runtime):
    failing = [
        {"type": "delta", "text": "partial"},
        {"type": "tool_call", "name": "lookup", "arguments": {}},
        {"type": "usage", "input_tokens": 100, "output_tokens": 20},
        runtime_gateway.TransientRuntimeError("reset by peer"),
    ]
    invocation = ask(world.a, catalogue.helpdesk)
    for _ in range(2):
        runtime.events = failing
        with pytest.raises(turns.RetryLater):
            run(world.a, invocation)
    runtime.events = [{"type": "delta", "text": "ok"}, {"type": "usage", "input_tokens": 10, "output_tokens": 1}]
    assert run(world.a, invocation) == "done"
    assert _events(world.a, invocation) == [(210, 41, 2, False, "done")]


def test_a_turn_stopped_while_it_waits_for_its_retry_is_billed_for_the_attempt_put_back(world, catalogue, runtime):
    runtime.events = [
        {"type": "delta", "text": "partial"},
        {"type": "usage", "input_tokens": 100, "output_tokens": 20},
        runtime_gateway.TransientRuntimeError("503"),
    ]
    invocation = ask(world.a, catalogue.helpdesk)
    with pytest.raises(turns.RetryLater):
        run(world.a, invocation)
    with tenant_context(world.a.tenant):
        Invocation.objects.filter(pk=invocation.pk).update(cancel_requested=True)
    assert run(world.a, invocation) == "cancelled"
    assert _events(world.a, invocation) == [(100, 20, 0, False, "cancelled")]


def test_a_turn_taken_over_from_a_dead_worker_bills_what_that_worker_streamed(world, catalogue, runtime):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    invocation = ask(world.a, catalogue.helpdesk)
    with tenant_context(world.a.tenant):
        Invocation.objects.filter(pk=invocation.pk).update(
            status=MessageStatus.STREAMING,
            started_at=timezone.now(),
            attempts=1,
            lease=f"{socket.gethostname()}:{child.pid}:killed",
        )
        streaming.publish_many(invocation.pk, [(1, "status", {"status": "running"}), (2, "delta", {"text": STREAMED})])
    runtime.events = [{"type": "delta", "text": "ok"}, {"type": "usage", "input_tokens": 10, "output_tokens": 1}]

    assert run(world.a, invocation) == "done"

    prompt = _prompt_tokens(world.a, invocation)
    assert _events(world.a, invocation) == [(10 + prompt, 1 + turns.estimate_tokens(STREAMED), 0, True, "done")]


def test_a_turn_stopped_by_its_asker_while_it_waits_for_its_retry_is_billed_for_the_attempt_put_back(
    world, catalogue, runtime
):
    runtime.events = [
        {"type": "delta", "text": "partial"},
        {"type": "usage", "input_tokens": 100, "output_tokens": 20},
        runtime_gateway.TransientRuntimeError("503"),
    ]
    invocation = ask(world.a, catalogue.helpdesk)
    with pytest.raises(turns.RetryLater):
        run(world.a, invocation)
    with tenant_context(world.a.tenant):
        services.cancel_turn(actor(world.a), Invocation.objects.get(pk=invocation.pk))

    assert _events(world.a, invocation) == [(100, 20, 0, False, "cancelled")]


def test_an_attempt_killed_before_its_reset_does_not_bill_the_retried_attempts_text_again(world, catalogue, runtime):
    runtime.events = [{"type": "delta", "text": STREAMED}, runtime_gateway.TransientRuntimeError("503")]
    invocation = ask(world.a, catalogue.helpdesk)
    with pytest.raises(turns.RetryLater):
        run(world.a, invocation)
    # The retry claims the turn, and its worker is killed before its "reset" reaches the relay:
    # what the relay holds last is the first attempt's text, carried already.
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with tenant_context(world.a.tenant):
        Invocation.objects.filter(pk=invocation.pk).update(
            status=MessageStatus.RUNNING,
            started_at=timezone.now(),
            attempts=2,
            lease=f"{socket.gethostname()}:{child.pid}:killed",
        )
    runtime.events = [{"type": "delta", "text": "ok"}, {"type": "usage", "input_tokens": 10, "output_tokens": 1}]

    assert run(world.a, invocation) == "done"

    prompt = _prompt_tokens(world.a, invocation)
    assert _events(world.a, invocation) == [(10 + prompt, 1 + turns.estimate_tokens(STREAMED), 0, True, "done")]


class _WorkerKilled(BaseException):
    """The worker's process ending where it stands (a SIGKILL): nothing after runs."""


def _dead_lease() -> str:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return f"{socket.gethostname()}:{child.pid}:killed"


def _killed_right_after_its_takeover_claim(side, invocation, monkeypatch) -> None:
    """A delivery takes the turn over from a dead attempt, and its own worker is killed the
    moment its claim has committed, before the turn goes any further."""
    claim = turns._claim

    def claim_then_die(tenant, invocation_id, dead_lease=None, **kwargs):
        claimed = claim(tenant, invocation_id, dead_lease=dead_lease, **kwargs)
        if claimed is not None and dead_lease is not None:
            raise _WorkerKilled
        return claimed

    monkeypatch.setattr(turns, "_claim", claim_then_die)
    with pytest.raises(_WorkerKilled):
        run(side, invocation)
    monkeypatch.setattr(turns, "_claim", claim)
    # Its process is gone too: its lease is a dead one.
    with tenant_context(side.tenant):
        assert Invocation.objects.filter(pk=invocation.pk).update(lease=_dead_lease()) == 1


def _left_streaming_by_a_dead_worker(side, invocation, streamed: str) -> None:
    with tenant_context(side.tenant):
        Invocation.objects.filter(pk=invocation.pk).update(
            status=MessageStatus.STREAMING, started_at=timezone.now(), attempts=1, lease=_dead_lease()
        )
        streaming.publish_many(invocation.pk, [(1, "status", {"status": "running"}), (2, "delta", {"text": streamed})])


def test_a_takeover_killed_right_after_its_claim_does_not_lose_what_the_dead_attempt_streamed(
    world, catalogue, runtime, monkeypatch
):
    invocation = ask(world.a, catalogue.helpdesk)
    _left_streaming_by_a_dead_worker(world.a, invocation, STREAMED)
    _killed_right_after_its_takeover_claim(world.a, invocation, monkeypatch)
    runtime.events = [{"type": "delta", "text": "ok"}, {"type": "usage", "input_tokens": 10, "output_tokens": 1}]

    assert run(world.a, invocation) == "done"  # a third delivery takes over from the second attempt

    prompt = _prompt_tokens(world.a, invocation)
    assert _events(world.a, invocation) == [(10 + prompt, 1 + turns.estimate_tokens(STREAMED), 0, True, "done")]
    with tenant_context(world.a.tenant):
        assert Invocation.objects.get(pk=invocation.pk).attempts == 3


def test_a_turn_stopped_after_a_takeover_killed_right_after_its_claim_bills_the_first_attempt_once(
    world, catalogue, runtime, monkeypatch
):
    invocation = ask(world.a, catalogue.helpdesk)
    _left_streaming_by_a_dead_worker(world.a, invocation, STREAMED)
    _killed_right_after_its_takeover_claim(world.a, invocation, monkeypatch)
    with tenant_context(world.a.tenant):
        services.cancel_turn(actor(world.a), Invocation.objects.get(pk=invocation.pk))

    assert run(world.a, invocation) == "cancelled"  # the redelivery ends it: its worker is gone

    prompt = _prompt_tokens(world.a, invocation)
    assert _events(world.a, invocation) == [(prompt, turns.estimate_tokens(STREAMED), 0, True, "cancelled")]
    assert runtime.calls == []


def test_the_sweeper_bills_the_first_attempt_of_a_turn_whose_taker_was_killed_right_after_its_claim(
    world, catalogue, runtime, monkeypatch
):
    from agents.tasks import TURN_TIME_LIMIT, fail_stuck_turns

    invocation = ask(world.a, catalogue.helpdesk)
    _left_streaming_by_a_dead_worker(world.a, invocation, STREAMED)
    _killed_right_after_its_takeover_claim(world.a, invocation, monkeypatch)
    with tenant_context(world.a.tenant):
        Invocation.objects.filter(pk=invocation.pk).update(
            started_at=timezone.now() - timedelta(seconds=TURN_TIME_LIMIT + 120)
        )

    assert fail_stuck_turns() == 1

    prompt = _prompt_tokens(world.a, invocation)
    assert _events(world.a, invocation) == [(prompt, turns.estimate_tokens(STREAMED), 0, True, "failed")]


def test_a_delivery_that_loses_the_takeover_to_another_carries_nothing(world, catalogue, runtime, monkeypatch):
    invocation = ask(world.a, catalogue.helpdesk)
    _left_streaming_by_a_dead_worker(world.a, invocation, STREAMED)
    runtime.events = [{"type": "delta", "text": "ok"}, {"type": "usage", "input_tokens": 10, "output_tokens": 1}]
    read_carry = turns._dead_attempt_carry
    outcomes = []

    def read_then_lose_the_race(*args):
        carry = read_carry(*args)
        monkeypatch.setattr(turns, "_dead_attempt_carry", read_carry)
        outcomes.append(run(world.a, invocation))  # another delivery takes the turn over meanwhile
        return carry

    monkeypatch.setattr(turns, "_dead_attempt_carry", read_then_lose_the_race)

    run(world.a, invocation)  # its claim fails: the other delivery took the turn and ran it

    assert outcomes == ["done"]
    assert len(runtime.calls) == 1
    prompt = _prompt_tokens(world.a, invocation)
    assert _events(world.a, invocation) == [(10 + prompt, 1 + turns.estimate_tokens(STREAMED), 0, True, "done")]
    with tenant_context(world.a.tenant):
        turn = Invocation.objects.get(pk=invocation.pk)
    assert (turn.attempts, turn.carried_output_tokens) == (2, turns.estimate_tokens(STREAMED))

"""Every attempt of a turn is billed, in the turn's one usage event: an attempt retried after
a transient runtime error, or taken over from a dead worker, used tokens the provider charged."""

from __future__ import annotations

import socket
import subprocess
import sys

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

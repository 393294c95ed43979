"""A turn whose worker was killed is run again by the task's redelivery at once, and one no
worker will finish is billed for what it streamed (ARCHITECTURE.md §5, §7)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from datetime import timedelta

from django.utils import timezone

from agents import streaming, turns
from agents.models import Invocation, MessageStatus
from agents.tasks import TURN_TIME_LIMIT, fail_stuck_turns, run_turn
from billing.models import UsageEvent
from tenants.context import tenant_context
from tests.billing.helpers import ask, run


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _left_streaming(
    side, invocation, lease: str, started_ago: float = 5, streamed: str = "", tool_calls: int = 0
) -> None:
    """As a worker killed mid-answer leaves it: claimed, streaming, some text (and tool calls) relayed."""
    with tenant_context(side.tenant):
        Invocation.objects.filter(pk=invocation.pk).update(
            status=MessageStatus.STREAMING,
            started_at=timezone.now() - timedelta(seconds=started_ago),
            attempts=1,
            lease=lease,
        )
        events = [(1, "status", {"status": "running"})]
        if streamed:
            events.append((2, "delta", {"text": streamed}))
        for n in range(tool_calls):
            events.append((3 + n, "tool_call", {"name": "search_docs", "arguments": {"query": "refunds"}}))
        if len(events) > 1:
            streaming.publish_many(invocation.pk, events)


def _turn(side, invocation):
    with tenant_context(side.tenant):
        return Invocation.objects.get(pk=invocation.pk)


def _events(side, invocation):
    with tenant_context(side.tenant):
        return list(
            UsageEvent.objects.filter(invocation_id=invocation.pk).values_list(
                "input_tokens", "output_tokens", "estimated", "outcome"
            )
        )


def test_a_delivery_takes_over_at_once_a_turn_whose_worker_process_on_this_host_is_gone(world, catalogue, runtime):
    invocation = ask(world.a, catalogue.helpdesk)
    _left_streaming(world.a, invocation, f"{socket.gethostname()}:{_dead_pid()}:killed", streamed="half an ans")

    assert run(world.a, invocation) == "done"

    turn = _turn(world.a, invocation)
    assert (turn.status, turn.attempts) == (MessageStatus.DONE, 2)
    assert runtime.calls == [turn.pk]
    with tenant_context(world.a.tenant):
        kinds = [event.kind for event in streaming.read(invocation.pk, 0)]
    assert kinds[2] == "reset"  # the reader drops the dead attempt's text and starts again
    assert len(_events(world.a, invocation)) == 1


def test_a_turn_whose_worker_still_runs_is_not_taken_over(world, catalogue, runtime):
    invocation = ask(world.a, catalogue.helpdesk)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        _left_streaming(world.a, invocation, f"{socket.gethostname()}:{alive.pid}:running")
        assert run(world.a, invocation) == "streaming"
        with tenant_context(world.a.tenant):  # same host: the process is asked, whatever the broker says
            assert turns.run(world.a.tenant, str(invocation.pk), redelivered=True) == "streaming"
    finally:
        alive.kill()
        alive.wait()
    assert runtime.calls == []
    assert _turn(world.a, invocation).attempts == 1


def test_a_redelivered_task_takes_over_a_turn_claimed_on_another_host(world, catalogue, runtime):
    invocation = ask(world.a, catalogue.helpdesk)
    _left_streaming(world.a, invocation, "another-worker-host:4242:token")

    assert run(world.a, invocation) == "streaming"  # a plain duplicate delivery does nothing
    assert runtime.calls == []
    # The broker's redelivery, as Celery's request sees it (Redis marks what it restores).
    run_turn.push_request(delivery_info={"redelivered": True}, retries=0)
    try:
        assert run_turn.run(world.a.tenant.pk, str(invocation.pk)) == "done"
    finally:
        run_turn.pop_request()
    turn = _turn(world.a, invocation)
    assert (turn.status, turn.attempts) == (MessageStatus.DONE, 2)
    assert turn.lease.startswith(f"{socket.gethostname()}:{os.getpid()}:")


def _usage(side, invocation):
    with tenant_context(side.tenant):
        return UsageEvent.objects.filter(invocation_id=invocation.pk).values("tool_calls", "runtime_seconds").get()


def test_it_carries_the_dead_attempts_tool_calls_and_runtime_into_the_one_usage_event(world, catalogue, runtime):
    invocation = ask(world.a, catalogue.helpdesk)
    _left_streaming(
        world.a,
        invocation,
        f"{socket.gethostname()}:{_dead_pid()}:killed",
        started_ago=20,
        streamed="half",
        tool_calls=2,
    )

    assert run(world.a, invocation) == "done"  # the new attempt makes no tool call (the fake runtime's answer)

    usage = _usage(world.a, invocation)
    assert usage["tool_calls"] == 2
    assert 20 <= usage["runtime_seconds"] < 60
    assert _turn(world.a, invocation).tool_call_count == 2


def test_it_counts_at_most_the_hard_time_limit_for_a_dead_attempt_found_long_after(world, catalogue, runtime):
    invocation = ask(world.a, catalogue.helpdesk)
    # Claimed longer ago than any attempt can run (but not yet stale: turns.STALE_AFTER).
    _left_streaming(world.a, invocation, "another-worker-host:4242:token", started_ago=TURN_TIME_LIMIT + 20)
    with tenant_context(world.a.tenant):
        assert turns.run(world.a.tenant, str(invocation.pk), redelivered=True) == "done"

    assert TURN_TIME_LIMIT <= _usage(world.a, invocation)["runtime_seconds"] < TURN_TIME_LIMIT + 30


def test_a_redelivery_ends_at_once_as_cancelled_a_stopped_turn_whose_worker_is_gone(world, catalogue, runtime):
    invocation = ask(world.a, catalogue.helpdesk)
    streamed = "y" * 40
    _left_streaming(
        world.a, invocation, f"{socket.gethostname()}:{_dead_pid()}:killed", streamed=streamed, tool_calls=1
    )
    with tenant_context(world.a.tenant):
        Invocation.objects.filter(pk=invocation.pk).update(cancel_requested=True)

    assert run(world.a, invocation) == "cancelled"

    assert runtime.calls == []  # not run again
    turn = _turn(world.a, invocation)
    assert (turn.status, turn.attempts) == (MessageStatus.CANCELLED, 1)
    [(input_tokens, output_tokens, estimated, outcome)] = _events(world.a, invocation)
    assert (output_tokens, estimated, outcome) == (turns.estimate_tokens(streamed), True, "cancelled")
    assert input_tokens > 0
    assert _usage(world.a, invocation)["tool_calls"] == 1
    with tenant_context(world.a.tenant):
        assert streaming.read(invocation.pk, 0)[-1].kind == "cancelled"
    # A further delivery (or the sweeper) finds it ended and bills nothing again.
    assert run(world.a, invocation) == "cancelled"
    assert fail_stuck_turns() == 0
    assert len(_events(world.a, invocation)) == 1


def test_a_stopped_turn_whose_worker_still_runs_is_left_to_it(world, catalogue, runtime):
    invocation = ask(world.a, catalogue.helpdesk)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        _left_streaming(world.a, invocation, f"{socket.gethostname()}:{alive.pid}:running")
        with tenant_context(world.a.tenant):
            Invocation.objects.filter(pk=invocation.pk).update(cancel_requested=True)
        assert run(world.a, invocation) == "streaming"
    finally:
        alive.kill()
        alive.wait()
    assert _events(world.a, invocation) == []


def _meanwhile(monkeypatch, happen) -> None:
    """`happen()` between the delivery's look at the turn and its takeover's claim (as another
    request or worker would act then): while it reads what the dead attempt used."""
    carry = turns._dead_attempt_carry

    def read_then_happen(*args):
        found = carry(*args)
        happen()
        return found

    monkeypatch.setattr(turns, "_dead_attempt_carry", read_then_happen)


def test_a_takeover_that_loses_to_another_delivery_answers_the_turns_status_now(world, catalogue, runtime, monkeypatch):
    invocation = ask(world.a, catalogue.helpdesk)
    dead = f"{socket.gethostname()}:{_dead_pid()}:killed"
    _left_streaming(world.a, invocation, dead, streamed="half an ans")
    _meanwhile(monkeypatch, lambda: turns._claim(world.a.tenant, str(invocation.pk), dead_lease=dead))

    assert run(world.a, invocation) == "running"  # the other delivery's attempt, not the dead one's "streaming"

    assert runtime.calls == []
    turn = _turn(world.a, invocation)
    assert (turn.status, turn.attempts) == (MessageStatus.RUNNING, 2)


def test_a_turn_stopped_while_its_takeover_was_about_to_claim_it_ends_cancelled_at_once(
    world, catalogue, runtime, monkeypatch
):
    invocation = ask(world.a, catalogue.helpdesk)
    _left_streaming(world.a, invocation, f"{socket.gethostname()}:{_dead_pid()}:killed", streamed="y" * 40)

    def stopped():
        with tenant_context(world.a.tenant):
            Invocation.objects.filter(pk=invocation.pk).update(cancel_requested=True)

    _meanwhile(monkeypatch, stopped)

    # Not left "streaming" with no worker behind it until the sweeper: no claim takes a
    # stopped turn, so this delivery ends it, as one that saw the stop before its claim does.
    assert run(world.a, invocation) == "cancelled"

    assert runtime.calls == []
    assert _turn(world.a, invocation).status == MessageStatus.CANCELLED
    [(_, output_tokens, estimated, outcome)] = _events(world.a, invocation)
    assert (output_tokens, estimated, outcome) == (turns.estimate_tokens("y" * 40), True, "cancelled")


def test_the_sweeper_bills_what_a_dead_worker_streamed_as_an_estimate(world, catalogue):
    invocation = ask(world.a, catalogue.helpdesk)
    streamed = "x" * 400
    _left_streaming(world.a, invocation, "gone-host:1:t", started_ago=TURN_TIME_LIMIT + 120, streamed=streamed)

    assert fail_stuck_turns() == 1

    [(input_tokens, output_tokens, estimated, outcome)] = _events(world.a, invocation)
    assert (output_tokens, estimated, outcome) == (turns.estimate_tokens(streamed), True, "failed")
    assert input_tokens > 0
    turn = _turn(world.a, invocation)
    assert (turn.output_tokens, turn.usage_estimated) == (100, True)


def test_redis_never_gives_back_a_task_that_may_still_be_running():
    """The visibility timeout is above every task's hard time limit: a task still running
    (a turn, or a long knowledge ingestion) is never handed to a second worker."""
    script = (
        "import json; from django.conf import settings; from portal.celery import app; "
        "app.loader.import_default_modules(); "
        "limits = [t.time_limit or app.conf.task_time_limit or 0 for n, t in app.tasks.items() "
        "if not n.startswith('celery.')]; "
        "print(json.dumps([settings.CELERY_BROKER_TRANSPORT_OPTIONS['visibility_timeout'], max(limits)]))"
    )
    env = {**os.environ, "CELERY_BROKER_URL": "redis://127.0.0.1:6399/0", "DJANGO_SETTINGS_MODULE": "portal.settings"}
    out = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {script}"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    ).stdout
    timeout, longest_task = json.loads(out.strip().splitlines()[-1])
    assert longest_task >= TURN_TIME_LIMIT
    assert timeout > longest_task


def _usage_event(side, invocation):
    with tenant_context(side.tenant):
        return (
            UsageEvent.objects.filter(invocation_id=invocation.pk)
            .values("input_tokens", "output_tokens", "tool_calls", "runtime_seconds", "estimated")
            .get()
        )


def test_a_stale_reclaim_carries_the_dead_attempts_tokens_tool_calls_and_runtime_like_a_takeover(
    world, catalogue, runtime
):
    invocation = ask(world.a, catalogue.helpdesk)
    streamed = "z" * 80
    # Claimed on another host longer ago than turns.STALE_AFTER, and this delivery is not
    # marked redelivered: only staleness lets it claim the turn.
    _left_streaming(
        world.a,
        invocation,
        "another-worker-host:4242:token",
        started_ago=turns.STALE_AFTER.total_seconds() + 30,
        streamed=streamed,
        tool_calls=2,
    )

    assert run(world.a, invocation) == "done"

    turn = _turn(world.a, invocation)
    assert (turn.status, turn.attempts) == (MessageStatus.DONE, 2)
    usage = _usage_event(world.a, invocation)
    # The new attempt's reported usage (the fake runtime: 1,200 in, 300 out, no tool call)
    # plus the dead attempt's estimate, tool calls and runtime (at most the hard time limit).
    assert usage["output_tokens"] == 300 + turns.estimate_tokens(streamed)
    assert usage["input_tokens"] > 1200
    assert usage["estimated"] is True
    assert usage["tool_calls"] == 2
    assert TURN_TIME_LIMIT <= usage["runtime_seconds"] < TURN_TIME_LIMIT + 30
    with tenant_context(world.a.tenant):
        kinds = [event.kind for event in streaming.read(invocation.pk, 0)]
    assert "reset" in kinds


def test_the_sweeper_bills_a_dead_workers_tool_calls_and_runtime_too(world, catalogue):
    invocation = ask(world.a, catalogue.helpdesk)
    streamed = "x" * 40
    _left_streaming(
        world.a,
        invocation,
        "gone-host:1:t",
        started_ago=TURN_TIME_LIMIT + 120,
        streamed=streamed,
        tool_calls=3,
    )

    assert fail_stuck_turns() == 1

    usage = _usage_event(world.a, invocation)
    assert (usage["output_tokens"], usage["estimated"]) == (turns.estimate_tokens(streamed), True)
    assert usage["tool_calls"] == 3
    assert TURN_TIME_LIMIT <= usage["runtime_seconds"] < TURN_TIME_LIMIT + 30  # at most the hard limit
    assert _turn(world.a, invocation).tool_call_count == 3

"""Portal overhead of one chat turn, in-process, with a runtime that answers at once.

Run by run.py with DATABASE_URL (and REDIS_URL) set for this measurement's own
database. Per turn it times `services.post_message` (checks, the three rows,
commit) and then what a worker runs for the task (`run_turn`'s body: tenant
lookup, claim, act-on-behalf token mint + exchange, request build, relay,
finish with the usage event). The runtime client is a fake that yields a short
delta, usage and done at once, so the figure is the portal's own time. The
broker publish and Celery's dispatch are not in it (queue_latency measures those).

    python -m tests.bench.inprocess --out result.json [--turns 400] [--warmup 50]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time
from collections import defaultdict

from tests.bench.common import VAR_BENCH, analyze, log, migrate, setup_django, summary_ms, write_result


class InstantRuntime:
    """A runtime client whose answer is ready at once: one delta, usage, done."""

    name = "bench-instant"

    def invoke(self, request, context):
        from agents.runtime.contract import Delta, Done, Usage

        answer = Delta(text="Refunds are accepted within 30 days.")
        return iter([answer, Usage(input_tokens=42, output_tokens=9), Done()])


class Turns:
    def __init__(self, world):
        from agents import runtime_gateway, turns
        from agents.tasks import run_turn

        self.world = world
        self.queued: list[tuple] = []
        self.spans: dict[str, list[float]] = defaultdict(list)
        self.actors = world.actors()
        client = InstantRuntime()
        runtime_gateway.client_for = lambda kind, tenant: client
        # The task is captured at commit instead of published: this measures the portal, not the broker.
        run_turn.apply_async = lambda args, queue=None, **kw: self.queued.append(tuple(args))
        self.run_task = run_turn.run  # the body a worker executes for the task
        for module, name in ((turns, "_claim"), (runtime_gateway, "mint_act_on_behalf_token"), (turns, "_finish")):
            setattr(module, name, self._timed(name, getattr(module, name)))

    def _timed(self, name, fn):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spans[name].append(time.perf_counter() - started)

        return timed

    def one(self, i: int) -> tuple[float, float, str]:
        from agents import services
        from agents.models import Conversation
        from tenants.context import tenant_context

        world = self.world
        pk = world.conversations[i % len(world.conversations)].pk
        with tenant_context(world.tenant):
            conversation = Conversation.objects.get(pk=pk)  # what the API view's access helper returns
        actor = self.actors[conversation.user_id]
        started = time.perf_counter()
        with tenant_context(world.tenant, user_id=actor.user.pk):
            services.post_message(actor, conversation, f"What is the refund window? ({i})")
        posted = time.perf_counter()
        tenant_id, invocation_id = self.queued.pop()
        outcome = self.run_task(tenant_id, invocation_id)
        finished = time.perf_counter()
        return posted - started, finished - posted, outcome


def _queries(turns: Turns, i: int) -> dict:
    """The SQL of one turn, split into post_message and the worker's part."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from agents import services

    original = services.post_message
    captured = {}

    def post(*args, **kwargs):
        with CaptureQueriesContext(connection) as ctx:
            result = original(*args, **kwargs)
        captured["post_message"] = [q["sql"] for q in ctx.captured_queries]
        return result

    services.post_message = post
    try:
        with CaptureQueriesContext(connection) as ctx:
            turns.one(i)
    finally:
        services.post_message = original
    everything = [q["sql"] for q in ctx.captured_queries]
    return {"post_message": captured["post_message"], "turn_total": everything}


def _round_trips(turns: Turns, first: int, count: int = 10) -> float | None:
    """PostgreSQL round trips per turn (psycopg waits for the server once per round trip)."""
    from django.conf import settings

    if not settings.DATABASE_IS_POSTGRES:
        return None
    import psycopg

    calls = 0
    wait = psycopg.Connection.wait

    def counting(self, *args, **kwargs):
        nonlocal calls
        calls += 1
        return wait(self, *args, **kwargs)

    psycopg.Connection.wait = counting
    try:
        for i in range(count):
            turns.one(first + i)
    finally:
        psycopg.Connection.wait = wait
    return calls / count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--turns", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--label", default="sqlite")
    args = parser.parse_args()

    setup_django()
    from django.conf import settings

    from agents import streaming
    from agents.models import Invocation, MessageStatus
    from billing.models import UsageEvent
    from tenants.context import tenant_context
    from tests.bench import data

    log(f"{args.label}: migrating {settings.DATABASES['default']['NAME']}")
    migrate()
    world = data.create(users=4, conversations=20)
    relay = "redis" if streaming.uses_redis() else "database"
    log(f"{args.label}: {args.warmup} warm-up + {args.turns} timed turns, relay={relay}, runtime=instant fake")
    turns = Turns(world)
    for i in range(args.warmup):
        turns.one(i)
    analyze()
    turns.spans.clear()
    post_times, run_times, outcomes = [], [], defaultdict(int)
    for i in range(args.turns):
        post, run, outcome = turns.one(args.warmup + i)
        post_times.append(post)
        run_times.append(run)
        outcomes[outcome] += 1
    totals = [p + r for p, r in zip(post_times, run_times, strict=True)]
    spans = {name: summary_ms(values) for name, values in turns.spans.items()}

    queries = _queries(turns, args.warmup + args.turns)
    round_trips = _round_trips(turns, args.warmup + args.turns + 1)
    profile = cProfile.Profile()
    profile.enable()
    for i in range(150):
        turns.one(args.warmup + args.turns + 20 + i)
    profile.disable()
    buffer = io.StringIO()
    stats = pstats.Stats(profile, stream=buffer)
    stats.sort_stats("cumulative").print_stats(45)
    stats.sort_stats("tottime").print_stats(25)
    report = VAR_BENCH / f"profile-inprocess-{args.label}.txt"
    sql = "\n".join(
        [f"# post_message: {len(queries['post_message'])} queries", *queries["post_message"]]
        + [f"\n# whole turn: {len(queries['turn_total'])} queries", *queries["turn_total"]]
    )
    report.write_text(f"cProfile of 150 turns ({args.label})\n\n{buffer.getvalue()}\n\nSQL of one turn\n{sql}\n")

    with tenant_context(world.tenant):
        done = Invocation.objects.filter(status=MessageStatus.DONE).count()
        usage = UsageEvent.objects.count()
        total = Invocation.objects.count()
    result = {
        "database": args.label,
        "relay": relay,
        "turns": args.turns,
        "warmup": args.warmup,
        "outcomes": dict(outcomes),
        "check": {"invocations": total, "done": done, "usage_events": usage},
        "overhead_ms": summary_ms(totals),
        "post_message_ms": summary_ms(post_times),
        "worker_ms": summary_ms(run_times),
        "spans_ms": spans,
        "queries_per_turn": {
            "post_message": len(queries["post_message"]),
            "total": len(queries["turn_total"]),
        },
        "db_round_trips_per_turn": round_trips,
        "profile": str(report.relative_to(VAR_BENCH.parent.parent)),
    }
    log(
        f"{args.label}: overhead p50 {result['overhead_ms']['p50']} ms, p99 {result['overhead_ms']['p99']} ms "
        f"(post_message p50 {result['post_message_ms']['p50']}, worker p50 {result['worker_ms']['p50']}); "
        f"{result['queries_per_turn']['total']} queries/turn, {round_trips} round trips; outcomes {dict(outcomes)}"
    )
    write_result(args.out, result)


if __name__ == "__main__":
    main()

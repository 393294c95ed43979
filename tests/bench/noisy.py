"""Noisy neighbour: tenant A sends 10× its rate limit while tenant B chats at a
steady pace; how much does B's p95 turn latency move? (`noisy_neighbour_p95_ratio`,
goal ≤ 1.10; ARCHITECTURE.md §7, issue 7.)

What isolates B: A's excess is refused at admission (billing.limits, before
anything is queued), and A's admitted turns run on A's tier queue, consumed by
A's own worker process; B's turns go to B's queue and B's worker. The measurement
has one web-side process per tenant (each posting through the real
services.post_message → admit path), one worker process per tier queue (each
running the real task body, agents.tasks.run_turn, with a runtime that answers
after 50 ms), and the broker replaced by one in-memory queue per tier, so the
figure is about the portal and its limits, not the broker.

B's turn latency = post_message called → B's worker finished the turn.
Phase 1: B alone. Phase 2: B the same, A posting at its limit (60/min, what it
pays for). Phase 3: B the same, A at 10× its limit. In phases 2 and 3 A's burst
allowance is spent first (DRAIN_SECONDS), so what differs between them is only
the excess that admission refuses.
noisy_neighbour_p95_ratio = p95(phase 3) / p95(phase 2): what A's excess costs B.
p95_ratio_vs_b_alone = p95(phase 3) / p95(phase 1) is reported too: it also holds
A's entitled load, which on one small machine shares B's CPU cores.

    python -m tests.bench.noisy [--quick]        # SQLite, and PostgreSQL + Redis if reachable
    python -m tests.bench.noisy --out r.json ... # one measurement (run.py-style child)

Results are MERGED into var/bench/billing.json (other benchmarks write other keys).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time

from tests.bench.common import VAR_BENCH, log, percentile, postgres_unreachable, redis_unreachable, summary_ms

RESULT = VAR_BENCH / "billing.json"
A_RPM = 60  # tenant A's tier limit; it sends ten times that
FLOOD_FACTOR = 10
B_INTERVAL = 0.25  # B posts every 250 ms: inside its limits, and its worker keeps headroom
MODEL_SECONDS = 0.05  # the stand-in model answers after 50 ms
# A flood first spends A's burst (one minute's allowance, GCRA) and A's worker works it off;
# B is measured after that, when all A can still get admitted is its steady rate.
DRAIN_SECONDS = 12.0


# ---------------------------------------------------------------- measurement (child process)


def _world(a_conversations: int, b_conversations: int):
    from agents.models import Agent, Conversation
    from tenants.context import all_tenants, tenant_context
    from tenants.identity.models import AgentGrant
    from tenants.models import DeploymentModel, Membership, Tenant, Tier, User
    from tenants.roles import Role
    from tests.bench import data

    b = data.create(users=4, conversations=b_conversations)  # tenant "bench": limits nobody reaches
    tier_a = Tier.objects.create(
        slug="noisy-a",
        name="Noisy A",
        included_tokens=10**12,
        requests_per_minute=A_RPM,
        tokens_per_minute=10**9,
        concurrent_sessions=10**4,
        allowed_models=["offline-small"],
        default_features=["chat"],
        celery_queue="tier-noisy-a",
    )
    tenant_a = Tenant.objects.create(
        slug="noisy-a", name="Noisy A", tier=tier_a, deployment_model=DeploymentModel.POOL, region="us-east-1"
    )
    with all_tenants("bench: offer the agent to A's tier"):
        agent = Agent.unscoped.get(pk=b.agent.pk)
        agent.offered_to_tiers = [*agent.offered_to_tiers, tier_a.slug]
        agent.save(update_fields=["offered_to_tiers"])
    user = User.objects.create_user(email="flood@noisy-a.test", password=None)
    with tenant_context(tenant_a):
        AgentGrant.objects.create(agent=agent.identity)
        membership = Membership.objects.create(user=user, role=Role.MEMBER)
        chats = [Conversation.objects.create(user=user, agent=agent) for _ in range(a_conversations)]
    tenant_a = Tenant.objects.select_related("tier").get(pk=tenant_a.pk)
    return b, (tenant_a, user, membership, chats)


def _patch_runtime() -> None:
    from agents import runtime_gateway

    class SlowishRuntime:
        name = "bench-noisy"

        def invoke(self, request, context):
            from agents.runtime.contract import Delta, Done, Usage

            time.sleep(MODEL_SECONDS)
            return iter([Delta(text="Refunds within 30 days."), Usage(input_tokens=40, output_tokens=8), Done()])

    client = SlowishRuntime()
    runtime_gateway.client_for = lambda kind, tenant: client


def _worker(tasks, results) -> None:
    """One tier's worker: runs the task body for each queued turn, reports when done."""
    from django.db import connections

    from agents.tasks import run_turn

    _patch_runtime()
    while True:
        item = tasks.get()
        if item is None:
            break
        tenant_id, invocation_id = item
        run_turn.run(tenant_id, invocation_id)
        results.put((invocation_id, time.time()))
    connections.close_all()


def _route_tasks(queues: dict) -> None:
    """The broker, in memory: a committed turn goes to its tier queue's worker."""
    from agents.tasks import run_turn

    run_turn.apply_async = lambda args, queue=None, **kw: queues[queue].put(tuple(args))


def _flood(tenant_pk, user_pk, conversation_pks, seconds, rate, queues, counts) -> None:
    """Tenant A's web side: `rate` posts a second for `seconds`, each in a fresh conversation."""
    from django.db import connections

    from agents import services
    from agents.models import Conversation
    from billing.limits import LimitExceeded
    from tenants.context import tenant_context
    from tenants.models import Membership, Tenant
    from tenants.services import Actor

    _route_tasks(queues)
    tenant = Tenant.objects.select_related("tier").get(pk=tenant_pk)
    with tenant_context(tenant):
        membership = Membership.objects.select_related("user").get(user_id=user_pk)
    actor = Actor(user=membership.user, membership=membership)
    accepted = refused = 0
    started = time.monotonic()
    for i, pk in enumerate(conversation_pks):
        due = started + i / rate
        if due - started > seconds:
            break
        time.sleep(max(0.0, due - time.monotonic()))
        with tenant_context(tenant):
            try:
                services.post_message(actor, Conversation.objects.get(pk=pk), "Flood?")
                accepted += 1
            except LimitExceeded:
                refused += 1
    counts.put((accepted, refused))
    connections.close_all()


def _b_phase(b, queues, results, seconds: float) -> list[float]:
    from agents import services
    from agents.models import Conversation
    from tenants.context import tenant_context

    actors = b.actors()
    started_at: dict[str, float] = {}
    latencies: list[float] = []
    begun = time.monotonic()
    i = 0
    while time.monotonic() - begun < seconds:
        due = begun + i * B_INTERVAL
        time.sleep(max(0.0, due - time.monotonic()))
        conversation = b.conversations.pop()
        actor = actors[conversation.user_id]
        t0 = time.time()
        with tenant_context(b.tenant):
            invocation = services.post_message(actor, Conversation.objects.get(pk=conversation.pk), f"B {i}?")
        started_at[str(invocation.pk)] = t0
        i += 1
        while not results.empty():
            done_id, done_at = results.get()
            latencies.append(done_at - started_at.pop(done_id))
    deadline = time.monotonic() + 30
    while started_at and time.monotonic() < deadline:
        done_id, done_at = results.get(timeout=30)
        latencies.append(done_at - started_at.pop(done_id))
    return latencies


def _started(process) -> None:
    """Note a forked child in BENCH_PIDFILE, so run.py stops it if this process is killed."""
    pidfile = os.environ.get("BENCH_PIDFILE")
    if pidfile:
        with open(pidfile, "a") as f:
            f.write(f"{process.pid}\n")


def measure(out: str, quick: bool) -> None:
    from tests.bench.common import migrate, setup_django, write_result

    # The worker and flood processes are forked from this one: a psycopg pool (its threads
    # and sockets) does not survive a fork, so every process opens plain connections.
    os.environ["DATABASE_POOL"] = "0"
    setup_django()
    migrate()
    from django.db import connections

    seconds = 6.0 if quick else 20.0
    flood_rate = FLOOD_FACTOR * A_RPM / 60.0
    b, (tenant_a, user_a, _, chats_a) = _world(
        a_conversations=int((flood_rate + A_RPM / 60.0) * (DRAIN_SECONDS + seconds)) + 40,
        b_conversations=int(3 * seconds / B_INTERVAL) + 80,
    )
    ctx = multiprocessing.get_context("fork")
    queues = {"tier-bench": ctx.Queue(), "tier-noisy-a": ctx.Queue()}
    b_results, a_results, counts = ctx.Queue(), ctx.Queue(), ctx.Queue()
    connections.close_all()  # children open their own connections
    workers = [
        ctx.Process(target=_worker, args=(queues["tier-bench"], b_results), name="worker-b"),
        ctx.Process(target=_worker, args=(queues["tier-noisy-a"], a_results), name="worker-a"),
    ]
    for process in workers:
        process.start()
        _started(process)
    _route_tasks(queues)
    chats = iter(chats_a)

    def with_flood(rate: float) -> tuple[list[float], int, int]:
        """B measured while A posts at `rate`/s; A's burst allowance is spent before measuring."""
        connections.close_all()
        pks = [next(chats).pk for _ in range(int(rate * (DRAIN_SECONDS + seconds)) + 5)]
        flood = ctx.Process(
            target=_flood,
            args=(tenant_a.pk, user_a.pk, pks, DRAIN_SECONDS + seconds, rate, queues, counts),
            name="web-a",
        )
        flood.start()
        _started(flood)
        time.sleep(DRAIN_SECONDS)
        latencies = _b_phase(b, queues, b_results, seconds)
        flood.join(timeout=120)
        accepted, refused = counts.get(timeout=30)
        return latencies, accepted, refused

    try:
        _b_phase(b, queues, b_results, 2.0)  # warm-up: imports, caches, first connections
        log("noisy: phase 1, tenant B alone")
        alone = _b_phase(b, queues, b_results, seconds)
        log(f"noisy: phase 2, tenant A at its limit ({A_RPM}/min)")
        at_limit, a_fair_accepted, a_fair_refused = with_flood(A_RPM / 60.0)
        log(f"noisy: phase 3, tenant A at {FLOOD_FACTOR}× its limit ({flood_rate:.0f}/s)")
        noisy, a_accepted, a_refused = with_flood(flood_rate)
    finally:
        for queue in queues.values():
            queue.put(None)
        for process in workers:
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()
    p95_alone = percentile([x * 1000 for x in alone], 95)
    p95_fair = percentile([x * 1000 for x in at_limit], 95)
    p95_noisy = percentile([x * 1000 for x in noisy], 95)
    from django.conf import settings

    write_result(
        out,
        {
            "backend": "postgres" if settings.DATABASE_IS_POSTGRES else "sqlite",
            "redis": bool(settings.REDIS_URL),
            # The headline: B with A at 10x its limit vs B with A at its limit (what A is entitled
            # to), i.e. what A's excess costs B. Against B entirely alone as well, for context.
            "noisy_neighbour_p95_ratio": round(p95_noisy / p95_fair, 3) if p95_fair else None,
            "p95_ratio_vs_b_alone": round(p95_noisy / p95_alone, 3) if p95_alone else None,
            "b_alone_p95_ms": round(p95_alone, 3) if p95_alone else None,
            "b_with_a_at_limit_p95_ms": round(p95_fair, 3) if p95_fair else None,
            "b_with_noisy_a_p95_ms": round(p95_noisy, 3) if p95_noisy else None,
            "b_alone_ms": summary_ms(alone),
            "b_with_a_at_limit_ms": summary_ms(at_limit),
            "b_with_noisy_a_ms": summary_ms(noisy),
            "a_at_limit_accepted": a_fair_accepted,
            "a_at_limit_refused": a_fair_refused,
            "a_attempts": a_accepted + a_refused,
            "a_accepted": a_accepted,
            "a_refused": a_refused,
            "a_limit_per_minute": A_RPM,
            "seconds_per_phase": seconds,
            "quick": quick,
        },
    )


# ---------------------------------------------------------------- orchestration


def merge(new: dict) -> None:
    """Merge our keys into var/bench/billing.json, keeping the keys other benchmarks wrote."""
    current: dict = {}
    if RESULT.exists():
        try:
            current = json.loads(RESULT.read_text())
        except ValueError:
            current = {}
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(current.get(key), dict):
            current[key].update(value)
        else:
            current[key] = value
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(current, indent=2, default=str))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="run one measurement and write its JSON here (internal)")
    parser.add_argument("--quick", action="store_true", help="short phases (a smoke run, not a result)")
    parser.add_argument("--only", default="sqlite,postgres", help="sqlite, postgres (with Redis) or both")
    args = parser.parse_args()
    if args.out:
        measure(args.out, args.quick)
        return 0

    from tests.bench.run import run_measurement

    VAR_BENCH.mkdir(parents=True, exist_ok=True)
    # `make bench BENCH_ARGS="--only …"` may name other benchmarks' measurements: ignore those.
    backends = [name for name in args.only.split(",") if name in ("sqlite", "postgres")] or ["sqlite", "postgres"]
    argv = ["--quick"] if args.quick else []
    ratios: dict = {}
    details: dict = {}
    for backend in backends:
        postgres = backend == "postgres"
        if postgres:
            reason = postgres_unreachable() or redis_unreachable()
            if reason:
                ratios[backend] = None
                details[backend] = {"skipped": reason}
                log(f"noisy ({backend}): skipped — {reason}")
                continue
        try:
            result = run_measurement(
                f"noisy_{backend}", "tests.bench.noisy", argv, postgres=postgres, redis=postgres, timeout=600
            )
        except Exception as exc:  # one backend failing still records the other
            ratios[backend] = None
            details[backend] = {"error": f"{exc.__class__.__name__}: {exc}"}
            log(f"noisy ({backend}): FAILED — {exc}")
            continue
        ratios[backend] = result["noisy_neighbour_p95_ratio"]
        details[backend] = result
    merge({"noisy_neighbour_p95_ratio": ratios, "noisy_neighbour": {"goal_ratio": 1.10, **details}})
    print("\nNoisy neighbour (tenant A at 10× its rate limit; tenant B's p95 turn latency)", flush=True)
    for backend, detail in details.items():
        if "b_alone_ms" in detail:
            print(
                f"  {backend:9} B p95 {detail['b_alone_p95_ms']} ms alone, {detail['b_with_a_at_limit_p95_ms']} ms "
                f"with A at its limit, {detail['b_with_noisy_a_p95_ms']} ms with A at 10x → ratio "
                f"{detail['noisy_neighbour_p95_ratio']} (goal ≤ 1.10; vs B alone {detail['p95_ratio_vs_b_alone']}); "
                f"A: {detail['a_accepted']} accepted, {detail['a_refused']} refused",
                flush=True,
            )
        else:
            print(f"  {backend:9} {detail}", flush=True)
    print(f"  merged into {RESULT}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Queue latency: commit of a queued turn → the runtime receiving the call, next to a bare Celery task.

Real processes: a Celery worker (Redis broker, this measurement's PostgreSQL
database) and the fake HTTP runtime (AGENT_RUNTIME=http), which notes when each
call arrives. This process posts turns with `services.post_message` one at a
time and notes the moment of commit (the on-commit hook that publishes the
task); the difference is what the portal adds before the runtime starts working:
broker, worker pick-up, claim, token mint + exchange, request build, HTTP call.
The baseline is a bare no-op task (`bench.noop`) on the same queue and worker,
enqueued → started, timed the same way. Turns and no-ops alternate, so both see
the same machine.

    python -m tests.bench.queue_latency --out result.json [--samples 300]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.request
import uuid

from tests.bench.common import (
    BENCH_QUEUE,
    Children,
    analyze,
    fake_runtime_argv,
    free_port,
    log,
    migrate,
    setup_django,
    summary_ms,
    wait_for_port,
    worker_argv,
    write_result,
)

WORKER_POOL, WORKER_CONCURRENCY = "threads", 8


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback URL we built)
        return json.loads(response.read())


def _post(url: str) -> None:
    request = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback URL we built)
        response.read()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()

    port = free_port()
    os.environ["AGENT_RUNTIME"] = "http"
    os.environ["RUNTIME_URL"] = f"http://127.0.0.1:{port}"
    setup_django()
    import redis
    from django.conf import settings

    from agents import services, streaming
    from agents.models import FINAL_STATUSES, Conversation, Invocation
    from agents.tasks import run_turn
    from tenants.context import tenant_context
    from tests.bench import data
    from tests.bench.celery_app import noop

    log(f"queue latency: migrating {settings.DATABASES['default']['NAME']}; broker {settings.CELERY_BROKER_URL}")
    migrate()
    world = data.create(users=2, conversations=20)
    actors = world.actors()
    client = redis.Redis.from_url(settings.REDIS_URL)

    committed: dict[str, float] = {}
    publish = run_turn.apply_async

    def timed_publish(args=None, **options):
        committed[str(args[1])] = time.time()  # on commit, just before the task is published
        return publish(args=args, **options)

    run_turn.apply_async = timed_publish

    def wait_final(invocation_id) -> str:
        key, after = streaming._key(invocation_id), "0-0"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for _, entries in client.xread({key: after}, block=5000) or []:
                for entry_id, fields in entries:
                    after = entry_id
                    if fields[b"k"].decode() in streaming.FINAL_KINDS:
                        return fields[b"k"].decode()
        raise TimeoutError(f"turn {invocation_id} did not finish in 30 s")

    def one_turn(i: int) -> str:
        pk = world.conversations[i % len(world.conversations)].pk
        with tenant_context(world.tenant):
            conversation = Conversation.objects.get(pk=pk)
            while Invocation.objects.filter(conversation=conversation).exclude(status__in=FINAL_STATUSES).exists():
                time.sleep(0.01)
            actor = actors[conversation.user_id]
            with tenant_context(world.tenant, user_id=actor.user.pk):
                invocation = services.post_message(actor, conversation, f"Refund window? ({i})")
        kind = wait_final(invocation.pk)
        if kind != "done":
            raise RuntimeError(f"turn {invocation.pk} ended {kind}")
        return str(invocation.pk)

    def one_noop() -> float:
        key = uuid.uuid4().hex
        sent = time.time()
        noop.apply_async(args=[key], queue=BENCH_QUEUE)
        while True:
            popped = client.blpop(["bench:noop"], timeout=30)
            if popped is None:
                raise TimeoutError("the no-op task did not start in 30 s")
            got_key, started = popped[1].decode().split(" ")
            if got_key == key:
                return float(started) - sent
            # A readiness probe sent while the worker was starting runs late; anything
            # else means results crossed.
            if got_key != "ready":
                raise RuntimeError("no-op results out of order")

    env = dict(os.environ)
    with Children("queue") as children:
        runtime = children.start("fake-runtime", fake_runtime_argv(port, 0.0), env)
        wait_for_port(port, 20, runtime)
        worker = children.start("worker", worker_argv(WORKER_POOL, WORKER_CONCURRENCY), env)
        log("waiting for the worker to consume")
        deadline = time.monotonic() + 60
        while True:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode} (see var/bench/logs/queue-worker.log)")
            try:
                noop.apply_async(args=["ready"], queue=BENCH_QUEUE)
                if client.blpop(["bench:noop"], timeout=2):
                    break
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the worker did not start consuming in 60 s")
        client.delete("bench:noop")
        log(f"worker ready ({WORKER_POOL} pool, concurrency {WORKER_CONCURRENCY}); {args.warmup} warm-up pairs")
        for i in range(args.warmup):
            one_noop()
            one_turn(i)
        committed.clear()
        analyze()
        _post(f"http://127.0.0.1:{port}/_bench/reset")
        log(f"timing {args.samples} turns and {args.samples} no-op tasks, alternating, one at a time")
        bare, turn_ids = [], []
        for i in range(args.samples):
            bare.append(one_noop())
            turn_ids.append(one_turn(args.warmup + i))
        receipts = _get_json(f"http://127.0.0.1:{port}/_bench/receipts")["receipts"]
    turn = [receipts[t] - committed[t] for t in turn_ids if t in receipts and t in committed]
    with tenant_context(world.tenant):
        traces = dict(Invocation.objects.filter(pk__in=turn_ids).values_list("pk", "trace"))
    result = {
        "worker": {"pool": WORKER_POOL, "concurrency": WORKER_CONCURRENCY},
        "samples": args.samples,
        "queue_to_runtime_ms": summary_ms(turn),
        "bare_celery_ms": summary_ms(bare),
    }
    result["phases_ms"] = _phases(traces, committed, receipts)
    q, b = result["queue_to_runtime_ms"], result["bare_celery_ms"]
    result["ratio_p50"] = round(q["p50"] / b["p50"], 2) if q["p50"] and b["p50"] else None
    log(
        f"queue→runtime p50 {q['p50']} ms p99 {q['p99']} ms; bare Celery p50 {b['p50']} ms p99 {b['p99']} ms "
        f"(ratio p50 {result['ratio_p50']})"
    )
    log("phases p50 (ms): " + ", ".join(f"{k} {v['p50']}" for k, v in result["phases_ms"].items()))
    write_result(args.out, result)


def _phases(traces: dict, committed: dict[str, float], receipts: dict[str, float]) -> dict:
    """Where the time between commit and the runtime's receipt went, from the worker's own spans
    (wall clock, as the receipts): pick-up (broker, Celery, tenant), claim, the gap to the
    runtime span (relay, guard set-up), prepare (token, request) and the HTTP call itself."""
    phases: dict[str, list[float]] = {"pickup": [], "claim": [], "to_prepare": [], "prepare": [], "http_send": []}
    for pk, spans in traces.items():
        key = str(pk)
        named = {s["name"]: s for s in spans or []}
        claim, prepare = named.get("turn.claim"), named.get("turn.prepare")
        if key not in committed or key not in receipts or claim is None or prepare is None:
            continue
        phases["pickup"].append(claim["at"] - committed[key])
        phases["claim"].append(claim["ms"] / 1000)
        phases["to_prepare"].append(prepare["at"] - claim["at"] - claim["ms"] / 1000)
        phases["prepare"].append(prepare["ms"] / 1000)
        phases["http_send"].append(receipts[key] - prepare["at"] - prepare["ms"] / 1000)
    return {name: summary_ms(values) for name, values in phases.items()}


if __name__ == "__main__":
    main()

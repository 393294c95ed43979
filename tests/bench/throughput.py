"""Sustained chat turns per second when the runtime takes 200 ms.

Real processes: one uvicorn web process (the portal's ASGI app, uvloop and httptools,
as README "Serving" says to run it), a Celery worker
(Redis broker, PostgreSQL, `--pool threads`: a turn mostly waits on the runtime,
so threads are the I/O-bound pool that needs no new dependency; gevent is not
installed) and the fake HTTP runtime sleeping 200 ms per call on asyncio. A
bounded number of client connections (keep-alive), each with its own
conversation and a member's Bearer token, loop: POST the message (202) → follow
the turn's SSE stream (the stream_url of the 202, whose stream token portal.asgi
serves from Redis without Django) until its final event → next. Turns per second =
completed turns / wall time of the timed phase (1500 turns or 90 s, whichever
comes first). CPU time per process over the phase shows where the cores went.

Sizing: every worker thread and every request being served holds its own
PostgreSQL connection (no pool), and max_connections is 100 here, so the
defaults are 32 worker threads and 48 clients. The web process runs with
DATABASE_CONN_MAX_AGE=0 (with the psycopg pool, Django's default here, connections
go back to the pool at the end of each request anyway).

    python -m tests.bench.throughput --out result.json [--turns 1500] [--clients 48] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import urllib.request
from collections import Counter

from tests.bench.common import (
    BENCH_QUEUE,
    BENCH_TENANT,
    HOST,
    Children,
    ConnectionSampler,
    analyze,
    cpu_cores,
    cpu_snapshot,
    fake_runtime_argv,
    free_port,
    log,
    migrate,
    setup_django,
    summary_ms,
    uvicorn_argv,
    wait_for_port,
    worker_argv,
    write_result,
)
from tests.bench.httpload import Connection, HttpError

RUNTIME_DELAY = 0.2
TURN_TIMEOUT = 30.0


class Load:
    def __init__(self, port: int, slug: str, chats: list[tuple[int, str]], turns: int, seconds: float):
        self.port, self.slug, self.chats = port, slug, chats
        self.remaining = turns
        self.deadline = time.monotonic() + seconds  # no new turn starts after this
        self.turn_times: list[float] = []
        self.post_times: list[float] = []
        self.errors: Counter = Counter()
        self.first_error: str = ""

    def _error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        self.first_error = self.first_error or f"{kind}: {detail}"[:300]

    async def client(self, conversation_id: int, token: str) -> None:
        connection = Connection(HOST, self.port, timeout=30)
        auth = {"Authorization": f"Bearer {token}"}
        path = f"/api/v1/tenants/{self.slug}/conversations/{conversation_id}/messages/"
        n = 0
        try:
            while self.remaining > 0 and time.monotonic() < self.deadline:
                self.remaining -= 1
                n += 1
                started = time.monotonic()
                body = None
                try:
                    status, body = await connection.json("POST", path, auth, {"text": f"Refund window? ({n})"})
                    posted = time.monotonic()
                    if status != 202:
                        self._error(f"POST {status}", str(body))
                        await asyncio.sleep(0.2)
                        continue
                    final = await asyncio.wait_for(self._follow(connection, body["stream_url"], auth), TURN_TIMEOUT)
                    if final != "done":
                        self._error(f"turn {final}", body["invocation_id"])
                        continue
                except (TimeoutError, OSError, ValueError, KeyError, HttpError) as exc:
                    self._error(exc.__class__.__name__, f"{exc} {body if isinstance(body, dict) else ''}")
                    await connection.close()
                    continue
                self.post_times.append(posted - started)
                self.turn_times.append(time.monotonic() - started)
        finally:
            await connection.close()

    @staticmethod
    async def _follow(connection: Connection, url: str, auth: dict) -> str | None:
        final = None
        async for kind, _data in connection.events(url, auth):
            if kind in ("done", "error", "cancelled"):
                final = kind
        return final

    async def progress(self) -> None:
        while True:
            await asyncio.sleep(10)
            log(f"  … {len(self.turn_times)} turns done, errors {dict(self.errors)}")

    async def run(self) -> float:
        started = time.monotonic()
        reporter = asyncio.ensure_future(self.progress())
        try:
            await asyncio.gather(*(self.client(pk, token) for pk, token in self.chats))
        finally:
            reporter.cancel()
        return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--turns", type=int, default=1500)
    parser.add_argument("--clients", type=int, default=48)
    parser.add_argument("--pool", default="threads")
    parser.add_argument("--concurrency", type=int, default=32)
    # As README "Serving" says to run it: one uvicorn worker process per core.
    parser.add_argument("--web-processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--web-conn-max-age", default="0", help="DATABASE_CONN_MAX_AGE of the web process")
    parser.add_argument("--profile-web", help="write a cProfile of the web process (all threads) here")
    parser.add_argument("--profile-worker", help="write a cProfile of the worker (all threads) here")
    parser.add_argument("--max-seconds", type=float, default=90, help="no new turn starts after this")
    args = parser.parse_args()

    runtime_port, web_port = free_port(), free_port()
    os.environ["AGENT_RUNTIME"] = "http"
    os.environ["RUNTIME_URL"] = f"http://127.0.0.1:{runtime_port}"
    setup_django()
    import redis
    from django.conf import settings
    from django.db import connections

    from agents.models import Invocation, MessageStatus
    from billing.models import UsageEvent
    from tenants.context import tenant_context
    from tests.bench import data
    from tests.bench.celery_app import noop

    log(f"throughput: migrating {settings.DATABASES['default']['NAME']}")
    migrate()
    world = data.create(users=8, conversations=args.clients)
    tokens = {user.pk: world.token(user) for user in world.users}
    chats = [(c.pk, tokens[c.user_id]) for c in world.conversations]
    connections.close_all()  # this process only drives load from here on
    client = redis.Redis.from_url(settings.REDIS_URL)

    env = dict(os.environ)
    with Children("throughput") as children:
        runtime = children.start("fake-runtime", fake_runtime_argv(runtime_port, RUNTIME_DELAY), env)
        # Django's advice for ASGI: no persistent connections (see the module docstring).
        web_argv = uvicorn_argv(web_port, *(["--workers", str(args.web_processes)] if args.web_processes > 1 else []))
        worker_args = worker_argv(args.pool, args.concurrency)
        web_env, worker_env = {**env, "DATABASE_CONN_MAX_AGE": args.web_conn_max_age}, dict(env)
        # Connection pools sized to what each process can use at once (PostgreSQL allows 100 here).
        web_env["DATABASE_POOL_MAX_SIZE"] = str(min(args.clients, 48) // args.web_processes)
        worker_env["DATABASE_POOL_MAX_SIZE"] = str(args.concurrency + 2)
        if args.profile_web:
            web_argv = [web_argv[0], "-m", "tests.bench.profiled", *web_argv[2:]]
            web_env["BENCH_PROFILE_OUT"] = args.profile_web
        if args.profile_worker:
            worker_args = [worker_args[0], "-m", "tests.bench.profiled", *worker_args[2:]]
            worker_env["BENCH_PROFILE_OUT"] = args.profile_worker
        web = children.start("web", web_argv, web_env)
        worker = children.start("worker", worker_args, worker_env)
        wait_for_port(runtime_port, 20, runtime)
        wait_for_port(web_port, 60, web)
        deadline = time.monotonic() + 60
        while True:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode} (var/bench/logs/throughput-worker.log)")
            noop.apply_async(args=["ready"], queue=BENCH_QUEUE)
            if client.blpop(["bench:noop"], timeout=2):
                break
            if time.monotonic() > deadline:
                raise TimeoutError("the worker did not start consuming in 60 s")
        log(
            f"web: uvicorn, {args.web_processes} process(es); "
            f"worker: --pool {args.pool} --concurrency {args.concurrency}; "
            f"runtime sleeps {RUNTIME_DELAY * 1000:.0f} ms; {args.clients} clients"
        )
        warm = Load(web_port, BENCH_TENANT, chats, args.clients, 60)
        asyncio.run(warm.run())
        log(f"warm-up: {len(warm.turn_times)} turns, errors {dict(warm.errors)} {warm.first_error}")
        analyze()

        pids = {"web": web.pid, "worker": worker.pid, "fake runtime": runtime.pid, "load client": os.getpid()}
        before = cpu_snapshot(pids, with_children=("web",))
        log(f"timing {args.turns} turns")
        load = Load(web_port, BENCH_TENANT, chats, args.turns, args.max_seconds)
        database = settings.DATABASES["default"]["NAME"]
        with ConnectionSampler(os.environ["DATABASE_OWNER_URL"], database) as sampler:
            elapsed = asyncio.run(load.run())
        cpu = cpu_cores(before, cpu_snapshot(pids, with_children=("web",)), elapsed)
        cores = os.cpu_count() or 1
        busy = cpu.pop("machine") / cores
        with urllib.request.urlopen(f"http://127.0.0.1:{runtime_port}/_bench/receipts", timeout=10) as response:  # noqa: S310
            runtime_stats = json.loads(response.read())
        if args.profile_web or args.profile_worker:  # writing a profile of many threads takes a while
            for process in (web, worker):
                children.stop(process, grace=180)
    with tenant_context(world.tenant):
        done = Invocation.objects.filter(status=MessageStatus.DONE).count()
        usage = UsageEvent.objects.count()
    completed = len(load.turn_times)
    top = max((k for k in cpu if k not in ("load client", "rest of machine")), key=lambda k: cpu[k])
    result = {
        "turns": args.turns,
        "completed": completed,
        "clients": args.clients,
        "elapsed_s": round(elapsed, 2),
        "turns_per_s": round(completed / elapsed, 1) if elapsed else None,
        "errors": dict(load.errors),
        "first_error": load.first_error,
        "turn_ms": summary_ms(load.turn_times),
        "post_ms": summary_ms(load.post_times),
        "worker": {"pool": args.pool, "concurrency": args.concurrency},
        "web": {"processes": args.web_processes, "server": "uvicorn (uvloop, httptools)"},
        "runtime_delay_ms": RUNTIME_DELAY * 1000,
        "runtime_max_in_flight": runtime_stats.get("max_in_flight"),
        "cpu_cores_by_process": cpu,
        "machine_busy_fraction": round(busy, 3),
        "check": {"invocations_done": done, "usage_events": usage},
        "postgres_connections_peak": sampler.peak,
    }
    result["cpu_summary"] = f"machine {busy * cores:.1f}/{cores}; " + ", ".join(
        f"{k} {v}" for k, v in sorted(cpu.items(), key=lambda kv: -kv[1])
    )
    portal = ("web", "worker", "postgres", "redis")
    per_turn = {k: round(cpu[k] * elapsed / completed * 1000, 1) for k in portal} if completed else {}
    result["cpu_ms_per_turn"] = per_turn
    total = sum(per_turn.values())
    result["cpu_ms_per_turn_total"] = round(total, 1)
    result["turns_per_s_cpu_ceiling"] = round(cores * 1000 / total, 1) if total else None
    result["bottleneck"] = (
        f"CPU: machine {busy:.0%} busy, most in {top}; portal CPU {total:.0f} ms/turn "
        f"({', '.join(f'{k} {v}' for k, v in per_turn.items())}) caps {cores} cores at "
        f"~{result['turns_per_s_cpu_ceiling']} turns/s"
        if busy > 0.85
        else f"not CPU-bound ({busy:.0%} busy): concurrency (clients {args.clients}, "
        f"worker {args.concurrency}) or latency limits it"
    )
    log(
        f"{completed} turns in {elapsed:.1f} s = {result['turns_per_s']} turns/s; turn p50 {result['turn_ms']['p50']} "
        f"ms; errors {dict(load.errors)}; {result['cpu_summary']}"
    )
    write_result(args.out, result)


if __name__ == "__main__":
    main()

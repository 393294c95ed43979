"""500 concurrent Server-Sent Events streams on one uvicorn web process, with the Redis relay.

This process plays the worker: it writes `--streams` running turns (one per
conversation, members of one tenant), opens one API stream per turn from an asyncio
client — the stream_url the POST of each turn would have answered
(`/api/v1/tenants/<slug>/invocations/<id>/events/?st=<stream token>`, plus the
member's Bearer token as a client sends it; `--no-stream-token` opens the plain URL,
authenticated by Django, as a client that builds the URL itself does) — waits until
all are open, notes the web process's RSS and the CPU it spends while they sit idle,
then publishes status, delta and done for every turn through `agents.streaming.publish` and times each delivery.
"Concurrent" counts the streams that were open together when the events were
published and then received all three.

    python -m tests.bench.sse --out result.json [--streams 500]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import time
from collections import Counter

from tests.bench.common import (
    BENCH_TENANT,
    HOST,
    Children,
    ConnectionSampler,
    cpu_seconds,
    free_port,
    log,
    migrate,
    rss_mb,
    setup_django,
    summary_ms,
    uvicorn_argv,
    wait_for_port,
    write_result,
)
from tests.bench.httpload import Connection

# Streams being opened at once. Without a stream token each opening runs Django's view on a
# thread holding a PostgreSQL connection, so this stays well under max_connections (100).
HANDSHAKES = 32
OPEN_TIMEOUT = 90.0  # all streams must be open by then
DELIVERY_TIMEOUT = 60.0
IDLE_SECONDS = 5.0
EXPECTED = ["status", "delta", "done"]


class Stream:
    def __init__(self, invocation_id: str, token: str, path: str):
        self.invocation_id, self.token, self.path = invocation_id, token, path
        self.opened = asyncio.Event()
        self.ended = False
        self.kinds: list[str] = []
        self.done_at: float | None = None
        self.error: str = ""


async def follow(stream: Stream, port: int, gate: asyncio.Semaphore) -> None:
    connection = Connection(HOST, port, timeout=DELIVERY_TIMEOUT + OPEN_TIMEOUT)
    try:
        async with gate:  # bounded number of handshakes at once; the streams themselves all stay open
            events = connection.events(stream.path, {"Authorization": f"Bearer {stream.token}"})
            kind, _ = await anext(events)
            stream.opened.set()
        async for kind, _data in events:
            if kind in EXPECTED:
                stream.kinds.append(kind)
            if kind == "done":
                stream.done_at = time.monotonic()
                break
    except Exception as exc:  # any failure is this stream's outcome, counted in the result
        stream.error = f"{exc.__class__.__name__}: {exc}"[:200]
    finally:
        stream.ended = True
        stream.opened.set()
        await connection.close()


async def drive(streams: list[Stream], port: int, web_pid: int, publish) -> dict:
    gate = asyncio.Semaphore(HANDSHAKES)
    tasks = [asyncio.ensure_future(follow(s, port, gate)) for s in streams]
    started = time.monotonic()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(s.opened.wait() for s in streams)), OPEN_TIMEOUT)
    open_seconds = time.monotonic() - started
    await asyncio.sleep(1.0)
    open_now = [s for s in streams if s.opened.is_set() and not s.ended]
    log(f"{len(open_now)} of {len(streams)} streams open after {open_seconds:.1f} s; idling {IDLE_SECONDS:.0f} s")
    cpu_before, idle_started = cpu_seconds(web_pid) or 0.0, time.monotonic()
    await asyncio.sleep(IDLE_SECONDS)
    idle_cpu = ((cpu_seconds(web_pid) or 0.0) - cpu_before) / (time.monotonic() - idle_started)
    rss_at_streams = rss_mb(web_pid)
    still_open = [s for s in streams if s.opened.is_set() and not s.ended]
    published_at = time.monotonic()
    sent = await asyncio.get_running_loop().run_in_executor(None, publish, [s.invocation_id for s in streams])
    publish_seconds = time.monotonic() - published_at
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), DELIVERY_TIMEOUT)
    except TimeoutError:
        for task in tasks:
            task.cancel()
    served = [s for s in still_open if s.kinds == EXPECTED and s.done_at is not None]
    errors = Counter(s.error.split(":")[0] for s in streams if s.error)
    incomplete = sum(1 for s in streams if not s.error and s.kinds != EXPECTED)
    if incomplete:
        errors["incomplete"] = incomplete
    return {
        "open_seconds": round(open_seconds, 1),
        "open_before_publish": len(still_open),
        "streams_concurrent": len(served),
        "web_rss_mb_at_streams": rss_at_streams,
        "idle_cpu_cores": round(idle_cpu, 3),
        "publish_seconds": round(publish_seconds, 2),
        # From the moment a turn's final event was written to Redis to the client reading it.
        "delivery_ms": summary_ms([s.done_at - sent[s.invocation_id] for s in served]),
        "errors": dict(errors),
        "first_error": next((s.error for s in streams if s.error), ""),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--no-stream-token", action="store_true", help="open the plain URL (Django authenticates)")
    args = parser.parse_args()

    setup_django()
    from django.conf import settings
    from django.db import connections

    from agents import streaming
    from agents.models import Invocation, Message, MessageStatus
    from agents.views import stream_url
    from tenants.context import tenant_context
    from tests.bench import data

    if not streaming.uses_redis():
        raise SystemExit("the SSE bench needs REDIS_URL (the Redis relay)")
    log(f"sse: migrating {settings.DATABASES['default']['NAME']}")
    migrate()
    world = data.create(users=10, conversations=args.streams)
    tokens = {user.pk: world.token(user) for user in world.users}
    streams = []
    with tenant_context(world.tenant):
        for conversation in world.conversations:
            asked = Message.objects.create(conversation=conversation, role=Message.Role.USER, content="Refunds?")
            answer = Message.objects.create(
                conversation=conversation, role=Message.Role.ASSISTANT, status=MessageStatus.RUNNING
            )
            invocation = Invocation.objects.create(
                conversation=conversation,
                user_id=conversation.user_id,
                agent=world.agent,
                user_message=asked,
                assistant_message=answer,
                status=MessageStatus.RUNNING,
                model_key="offline-small",
            )
            path = f"/api/v1/tenants/{BENCH_TENANT}/invocations/{invocation.pk}/events/"
            if not args.no_stream_token:
                path = stream_url(path, world.tenant, invocation.pk, conversation.user_id)
            streams.append(Stream(str(invocation.pk), tokens[conversation.user_id], path))
    connections.close_all()

    def publish(invocation_ids: list[str]) -> dict[str, float]:
        """What a worker relays for a short answer, for every turn; when each final event was written."""
        sent = {}
        for invocation_id in invocation_ids:
            streaming.publish(invocation_id, 1, "status", {"status": "streaming"})
            streaming.publish(invocation_id, 2, "delta", {"text": "Refunds are accepted within 30 days."})
            streaming.publish(invocation_id, 3, "done", {"message_id": None})
            sent[invocation_id] = time.monotonic()
        return sent

    port = free_port()
    env = {**os.environ, "DATABASE_CONN_MAX_AGE": "0"}  # as in the throughput bench (ASGI)
    with Children("sse") as children:
        web = children.start("web", uvicorn_argv(port), env)
        wait_for_port(port, 60, web)

        async def warm_up() -> None:
            connection = Connection(HOST, port)
            for stream in streams[:5]:
                url = f"/api/v1/tenants/{BENCH_TENANT}/invocations/{stream.invocation_id}/"
                await connection.json("GET", url, {"Authorization": f"Bearer {stream.token}"})
            await connection.close()

        asyncio.run(warm_up())
        time.sleep(1)
        idle_rss = rss_mb(web.pid)
        log(
            f"web (pid {web.pid}) idle RSS {idle_rss} MB; "
            f"opening {args.streams} streams ({HANDSHAKES} handshakes at a time)"
        )
        database = settings.DATABASES["default"]["NAME"]
        with ConnectionSampler(os.environ["DATABASE_OWNER_URL"], database) as sampler:
            outcome = asyncio.run(drive(streams, port, web.pid, publish))
    result = {"streams": args.streams, "stream_token": not args.no_stream_token, "web_rss_mb_idle": idle_rss, **outcome}
    result["postgres_connections_peak"] = sampler.peak
    log(
        f"{result['streams_concurrent']} of {args.streams} streams served concurrently; web RSS "
        f"{result['web_rss_mb_at_streams']} MB (idle {idle_rss} MB); CPU while idle-open {result['idle_cpu_cores']} "
        f"cores; delivery p50 {result['delivery_ms']['p50']} ms; PostgreSQL connections peak {sampler.peak}; "
        f"errors {result['errors']}"
    )
    write_result(args.out, result)


if __name__ == "__main__":
    main()

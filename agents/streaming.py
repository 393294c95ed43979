"""The relay that carries a turn's events from the Celery worker to the browser.

Each event has a sequence number, which is also its Server-Sent Events id, so a
browser that reconnects with Last-Event-ID resumes exactly after what it saw:
nothing lost, nothing repeated. Redis streams carry events when REDIS_URL is set
(one stream per invocation, ids "0-<seq>", expiring an hour after the last
write); otherwise rows of agents.StreamEvent do, read by polling.

Event kinds: "status", "delta" {text}, "replace" {text} (what was shown is corrected),
"reset" (a retry starts the answer over), "tool_call", "citation", and the final ones,
one of which ends every turn's stream: "done", "cancelled", "error" (it failed) and
"blocked" (the guardrails blocked the question or the answer). A reader stops at the
final event; the stream view ends there.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings

FINAL_KINDS = ("done", "cancelled", "error", "blocked")
STREAM_TTL_SECONDS = 3600
KEY_PREFIX = "portal:turn:"
# Each open SSE stream waits in a blocking XREAD, which holds one connection of the
# web process's asyncio pool for up to STREAM_POLL_MS; redis-py's default pool stops
# at 100, so the 101st concurrent stream failed (found by `make bench`).
ASYNC_MAX_CONNECTIONS = 5000


@dataclass(frozen=True)
class Event:
    seq: int
    kind: str
    data: dict

    @property
    def is_final(self) -> bool:
        return self.kind in FINAL_KINDS

    def sse(self) -> str:
        return f"id: {self.seq}\nevent: {self.kind}\ndata: {json.dumps(self.data, separators=(',', ':'))}\n\n"


def uses_redis() -> bool:
    return bool(settings.REDIS_URL)


@lru_cache(maxsize=1)
def _redis():
    import redis

    return redis.Redis.from_url(settings.REDIS_URL)


_async_clients: dict[int, object] = {}
_async_lock = threading.Lock()


def _redis_async():
    """One asyncio client per event loop (a client is bound to the loop that made it)."""
    import asyncio

    import redis.asyncio as aioredis

    loop = asyncio.get_running_loop()
    with _async_lock:
        client = _async_clients.get(id(loop))
        if client is None:
            client = aioredis.Redis.from_url(settings.REDIS_URL, max_connections=ASYNC_MAX_CONNECTIONS)
            _async_clients[id(loop)] = client
    return client


def _key(invocation_id) -> str:
    return f"{KEY_PREFIX}{invocation_id}"


# --- writing (the worker) ------------------------------------------------------------


def last_seq(invocation_id) -> int:
    if uses_redis():
        newest = _redis().xrevrange(_key(invocation_id), count=1)
        return int(newest[0][0].decode().split("-")[1]) if newest else 0
    from django.db.models import Max

    from agents.models import StreamEvent

    return StreamEvent.objects.filter(invocation_id=invocation_id).aggregate(m=Max("seq"))["m"] or 0


# --- who may still read a tenant's streams ---------------------------------------------------
#
# An open stream, and a turn's stream token, must stop serving someone whose access to the
# tenant's turns changed (removed, moved to a role that may not chat, a conversation deleted)
# without a database query per poll. So each such change moves the tenant's *access
# generation* on (access_changed, after its commit); a stream compares it every
# STREAM_ACCESS_CHECK_SECONDS (one Redis GET, or a look at the process's cache) and asks the
# database only when it moved; a stream token is signed over it, so one made before the
# change no longer opens the fast path (agents.views). The generation is the change's time
# in nanoseconds: a flushed Redis cannot bring an old one back. Without Redis it lives in
# the process's own cache, as the web tier of the embedded setup is one process.
ACCESS_KEY_PREFIX = "portal:access:"


def _access_key(tenant_id) -> str:
    return f"{ACCESS_KEY_PREFIX}{tenant_id}"


def access_changed(tenant_id) -> None:
    """Someone's access to the tenant's turns changed: open streams re-check it, stream
    tokens made before now stop opening the fast path. Call it after the change commits."""
    value = time.time_ns()
    if uses_redis():
        _redis().set(_access_key(tenant_id), value)
    else:
        from django.core.cache import cache

        cache.set(_access_key(tenant_id), value, None)


def access_generation(tenant_id) -> int:
    if uses_redis():
        return int(_redis().get(_access_key(tenant_id)) or 0)
    from django.core.cache import cache

    return cache.get(_access_key(tenant_id), 0)


async def access_generation_async(tenant_id) -> int:
    if uses_redis():
        return int(await _redis_async().get(_access_key(tenant_id)) or 0)
    from django.core.cache import cache

    return cache.get(_access_key(tenant_id), 0)  # the process's memory: nothing to wait for


def erase(invocation_ids) -> None:
    """Forget the relayed streams of these invocations (a conversation deleted by its owner).
    Their stream tokens stop opening the fast path too (access_changed), so a reconnect goes
    through Django, which no longer finds the turn."""
    invocation_ids = list(invocation_ids)
    if not invocation_ids:
        return
    from tenants.context import current_tenant

    tenant = current_tenant()
    if tenant is not None:
        access_changed(tenant.pk)
    if uses_redis():
        _redis().delete(*(_key(pk) for pk in invocation_ids))
        return
    from agents.models import StreamEvent

    StreamEvent.objects.filter(invocation_id__in=invocation_ids).delete()


def erase_if_deleted(invocation_id, conversation_id) -> bool:
    """After a turn's final event: erase its stream again if its conversation was deleted
    meanwhile, and say so.

    A conversation can be deleted as soon as its last turn's finish commits, a moment
    before the worker publishes that turn's final event (with the answer's last text, or
    the guardrails' block message, or what replaces it): the delete's erase may run first,
    and the final write would then bring the stream of a deleted conversation back. This
    read comes after that write, and agents.services.delete_conversation erases again once
    its delete has committed: if this read misses the delete, that erase comes after the
    write; if it sees it, this erase does. Nothing of it stays on either relay."""
    from portal.db import sql
    from tenants.context import require_tenant

    # One prepared statement, not the ORM's exists() (about 0.2 ms of Python per turn);
    # require_tenant() fails closed like the tenant manager, and the condition names it.
    deleted = sql.one(
        "SELECT 1 FROM agents_conversation WHERE tenant_id = %s AND id = %s AND deleted_at IS NOT NULL",
        [require_tenant().pk, conversation_id],
    )
    if deleted is not None:
        erase([invocation_id])
        return True
    return False


def publish(invocation_id, seq: int, kind: str, data: dict) -> None:
    publish_many(invocation_id, [(seq, kind, data)])


def publish_many(invocation_id, events: list[tuple[int, str, dict]], *, read: list[str] | None = None):
    """Write events (seq, kind, data) of one invocation, in order: one Redis round trip
    (or one INSERT) for all of them.

    `read`: Redis keys the caller needs anyway, read (MGET) in that same round trip, after
    the events are written; their raw values are returned (a list, None for a missing key).
    Only with the Redis relay: on the database relay it is None, as without `read`."""
    if not events:
        return None
    if uses_redis():
        key = _key(invocation_id)
        pipe = _redis().pipeline(transaction=False)
        for seq, kind, data in events:
            pipe.xadd(key, {"k": kind, "d": json.dumps(data)}, id=f"0-{seq}")
        pipe.expire(key, STREAM_TTL_SECONDS)
        if read:
            pipe.mget(read)
        results = pipe.execute()
        return results[-1] if read else None
    import contextlib

    from django.db import transaction

    from agents.models import StreamEvent
    from portal.db import sql

    # sql.insert (not bulk_create) sets and checks the tenant like save(), with the INSERT
    # built once. Several rows, one commit.
    with transaction.atomic() if len(events) > 1 else contextlib.nullcontext():
        for seq, kind, data in events:
            sql.insert(StreamEvent(invocation_id=invocation_id, seq=seq, kind=kind, data=data))
    return None


def publish_final(invocation_id, kind: str, data: dict, *, conversation_id=None) -> None:
    """The final event, after whatever the stream holds; with `conversation_id`, the stream
    is then erased again if that conversation was deleted meanwhile (erase_if_deleted)."""
    publish(invocation_id, last_seq(invocation_id) + 1, kind, data)
    if conversation_id is not None:
        erase_if_deleted(invocation_id, conversation_id)


class Publisher:
    """Numbers events and coalesces deltas, so a fast model does not write a row
    (or a Redis entry) per token: a delta is flushed at FLUSH_CHARS characters or
    FLUSH_SECONDS after the previous flush, whichever comes first. The first text
    goes out at once: it ends the person's wait, and if the runtime pauses right
    after it (nothing comes to trigger the next flush) it would wait with it.

    Everything waiting goes out together in one write: `emit(..., defer=True)` numbers an
    event but lets it wait for the next write (e.g. the "streaming" status, sent with the
    first delta), and an emit or flush sends what waits before anything that follows it."""

    FLUSH_CHARS = 48
    FLUSH_SECONDS = 0.06

    def __init__(self, invocation_id, clock, start: int | None = None, *, conversation_id=None):
        """`start`: the sequence number already reached, when the caller knows it (None: ask the relay).
        `conversation_id`: the turn's conversation; the write with the final event then erases the
        stream again if that conversation was deleted meanwhile (erase_if_deleted)."""
        self.invocation_id = invocation_id
        self.conversation_id = conversation_id
        self.seq = last_seq(invocation_id) if start is None else start
        self._pending = ""
        self._waiting: list[tuple[int, str, dict]] = []
        self._clock = clock
        self._last_flush = clock()
        self._text_sent = False

    def emit(self, kind: str, data: dict, *, defer: bool = False, read: list[str] | None = None):
        """`read`: Redis keys to read in the same round trip as the write (publish_many);
        their raw values are returned (None on the database relay)."""
        self._take_pending()
        self.seq += 1
        self._waiting.append((self.seq, kind, data))
        if not defer:
            return self._send(read)
        return None

    def delta(self, text: str) -> None:
        self._pending += text
        first_text = bool(self._pending) and not self._text_sent
        if (
            first_text
            or len(self._pending) >= self.FLUSH_CHARS
            or self._clock() - self._last_flush >= self.FLUSH_SECONDS
        ):
            self._text_sent = self._text_sent or first_text
            self.flush()

    def flush(self) -> None:
        self._take_pending()
        self._send()

    def _take_pending(self) -> None:
        if self._pending:
            text, self._pending = self._pending, ""
            self.seq += 1
            self._waiting.append((self.seq, "delta", {"text": text}))

    def _send(self, read: list[str] | None = None):
        values = None
        if self._waiting:
            events, self._waiting = self._waiting, []
            if read:
                values = publish_many(self.invocation_id, events, read=read)
            else:
                publish_many(self.invocation_id, events)
            if self.conversation_id is not None and any(kind in FINAL_KINDS for _, kind, _ in events):
                erase_if_deleted(self.invocation_id, self.conversation_id)
        self._last_flush = self._clock()
        return values


# --- reading (the SSE view) ------------------------------------------------------------


def _decode_redis(entries) -> list[Event]:
    events = []
    for entry_id, fields in entries:
        seq = int(entry_id.decode().split("-")[1])
        events.append(Event(seq, fields[b"k"].decode(), json.loads(fields[b"d"])))
    return events


def read_db(invocation_id, after: int, limit: int = 500) -> list[Event]:
    from agents.models import StreamEvent

    rows = StreamEvent.objects.filter(invocation_id=invocation_id, seq__gt=after).order_by("seq")[:limit]
    return [Event(row.seq, row.kind, row.data) for row in rows]


def off_request_thread(function):
    """`function`, for a thread of the event loop's executor (sync_to_async with
    thread_sensitive=False), giving back its pooled database connection when it returns.

    Nothing else would: Django closes a request thread's connections when the request
    finishes, never an executor thread's, so each of those threads kept one of the pool's
    connections for good: an executor has up to min(32, CPUs + 4) threads, more than the
    pool's 20 on a larger machine, and every new event loop (each test's) has threads of its
    own. Without a pool the connection stays, as a persistent connection of its thread."""
    import functools

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        from django.db import connection

        try:
            return function(*args, **kwargs)
        finally:
            if getattr(connection, "pool", None) is not None and not connection.in_atomic_block:
                connection.close()  # back to the pool

    return wrapper


_read_db_off_request_thread = off_request_thread(read_db)


async def read_async(invocation_id, after: int, block_ms: int) -> list[Event]:
    """Events after `after`, waiting up to block_ms for new ones (Redis) or one poll (database)."""
    if uses_redis():
        result = await _redis_async().xread({_key(invocation_id): f"0-{after}"}, count=500, block=block_ms)
        return _decode_redis(result[0][1]) if result else []
    import asyncio

    from asgiref.sync import sync_to_async

    events = await sync_to_async(_read_db_off_request_thread, thread_sensitive=False)(invocation_id, after)
    if not events:
        await asyncio.sleep(min(block_ms, 250) / 1000)
    return events


def read(invocation_id, after: int) -> list[Event]:
    if uses_redis():
        return _decode_redis(_redis().xrange(_key(invocation_id), min=f"0-{after + 1}", max="+", count=500))
    return read_db(invocation_id, after)


def attempt_texts(invocation_id) -> list[str]:
    """The text each attempt of the turn streamed so far, as the relay holds it (one string
    per attempt: a "reset" starts the next). What the worker published, so the redacted text
    where the output guardrails redact: it is there to estimate the tokens a provider
    produced for an attempt that could not report them (its worker died)."""
    return [text for text, _ in attempts_streamed(invocation_id)]


def attempts_streamed(invocation_id) -> list[tuple[str, list[dict]]]:
    """What each attempt of the turn streamed so far: its text (as attempt_texts) and the
    tool calls it published, one (text, tool calls) per attempt."""
    return [(text, tool_calls) for _, text, tool_calls in _numbered_attempts(invocation_id)]


def attempt_streamed(invocation_id, attempt: int) -> tuple[str, list[dict]]:
    """What attempt number `attempt` of the turn streamed (as attempts_streamed): from the
    "reset" that names it (the first attempt: from the start). Nothing if it published no
    reset (its worker died between its claim and its reset): the relay's last attempt is
    then an earlier one, whose usage was carried already, not this one's."""
    for number, text, tool_calls in reversed(_numbered_attempts(invocation_id)):
        if number == attempt:
            return text, tool_calls
    return "", []


def _numbered_attempts(invocation_id) -> list[tuple[int, str, list[dict]]]:
    attempts: list[tuple[int, str, list[dict]]] = [(1, "", [])]
    after = 0
    while True:
        events = read(invocation_id, after)
        if not events:
            return attempts
        for event in events:
            number, text, tool_calls = attempts[-1]
            if event.kind == "reset":
                attempts.append((int(event.data.get("attempt") or number + 1), "", []))
            elif event.kind == "delta":
                attempts[-1] = (number, text + str(event.data.get("text", "")), tool_calls)
            elif event.kind == "replace":
                attempts[-1] = (number, str(event.data.get("text", "")), tool_calls)
            elif event.kind == "tool_call":
                tool_calls.append(dict(event.data))
        after = events[-1].seq

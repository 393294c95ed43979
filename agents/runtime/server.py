"""The runtime's HTTP server: ``POST /invocations`` and ``GET /ping`` (the AgentCore contract).

Why a bare ASGI app run by uvicorn rather than ``http.server.ThreadingHTTPServer``:
uvicorn (already a dependency of the portal) parses HTTP with h11, speaks
keep-alive and chunked transfer correctly, shuts down gracefully on SIGTERM
(AgentCore and container orchestrators stop instances that way) and keeps
answering ``/ping`` on its event loop while invocations run, which is exactly
what ``HealthyBusy`` needs. A framework would add nothing for two routes.

The agent and its providers are ordinary blocking code (urllib, boto3), so
each invocation is driven from a thread pool, one ``next()`` at a time, and its
events are written to the socket as they come: a streamed answer reaches the
caller word by word. If the caller disconnects, the agent's generator is
closed, which closes the provider's own stream and stops spending tokens.

Errors: refused requests get the status from :class:`RequestRefused` and a JSON
body ``{"error": {"code", "message"}}`` (401s with ``WWW-Authenticate: Bearer``);
failures inside the agent arrive in-band as ``error`` events (or as ``error``
in the JSON document) with status 200, because by then the stream has started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agents.runtime.contract import (
    JSON_CONTENT_TYPE,
    SSE_CONTENT_TYPE,
    Event,
    InvocationResult,
    RequestRefused,
    encode_sse,
)
from agents.runtime.host import RuntimeHost

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024


class RuntimeApp:
    """ASGI application serving one :class:`RuntimeHost`."""

    def __init__(self, host: RuntimeHost, *, max_body_bytes: int = MAX_BODY_BYTES, max_threads: int = 32):
        self.host = host
        self.max_body_bytes = max_body_bytes
        self._executor = ThreadPoolExecutor(max_workers=max_threads, thread_name_prefix="invocation")

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/ping":
            if method in ("GET", "HEAD"):
                await _send_json(send, 200, self.host.ping())
            else:
                await _send_json(send, 405, _error("method_not_allowed", "Use GET."), [(b"allow", b"GET")])
        elif path == "/invocations":
            if method == "POST":
                await self._invoke(scope, receive, send)
            else:
                await _send_json(send, 405, _error("method_not_allowed", "Use POST."), [(b"allow", b"POST")])
        else:
            await _send_json(send, 404, _error("not_found", "No such route."))

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._executor.shutdown(wait=False, cancel_futures=True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _read_body(self, receive) -> bytes | None:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise RequestRefused(413, "payload_too_large", f"The body exceeds {self.max_body_bytes} bytes.")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _invoke(self, scope: dict, receive, send) -> None:
        loop = asyncio.get_running_loop()
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}
        try:
            body = await self._read_body(receive)
            if body is None:
                return
            prepared = await loop.run_in_executor(self._executor, self.host.prepare, headers, body)
        except RequestRefused as exc:
            logger.info("invocation refused: %s %s", exc.status, exc.reason)
            extra = [(b"www-authenticate", f'Bearer error="{exc.code}"'.encode())] if exc.status == 401 else []
            await _send_json(send, exc.status, exc.to_document(), extra)
            return
        except Exception:
            logger.exception("invocation could not be prepared")
            await _send_json(send, 500, _error("internal_error", "The runtime failed."))
            return
        events = self.host.run(prepared)
        if prepared.request.stream:
            await self._stream(events, receive, send)
        else:
            try:
                result = await loop.run_in_executor(self._executor, InvocationResult.from_events, events)
            finally:
                events.close()
            await _send_json(send, 200, result.to_document())

    async def _stream(self, events: Iterator[Event], receive, send) -> None:
        loop = asyncio.get_running_loop()
        disconnected = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            disconnected.set()

        watcher = asyncio.create_task(watch())
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", f"{SSE_CONTENT_TYPE}; charset=utf-8".encode()),
                    (b"cache-control", b"no-cache"),
                    (b"x-accel-buffering", b"no"),  # proxies must not buffer a stream
                ],
            }
        )
        try:
            while not disconnected.is_set():
                event = await loop.run_in_executor(self._executor, next, events, None)
                if event is None:
                    break
                await send({"type": "http.response.body", "body": encode_sse(event), "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            if disconnected.is_set():
                logger.info("caller disconnected; closing the invocation")
            # ValueError: still executing in a cancelled worker thread; it ends by itself.
            with contextlib.suppress(RuntimeError, ValueError):
                await loop.run_in_executor(self._executor, events.close)


def _error(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


async def _send_json(send, status: int, document: Any, extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(document, ensure_ascii=False).encode()
    headers = [(b"content-type", JSON_CONTENT_TYPE.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra_headers or [])})
    await send({"type": "http.response.body", "body": body, "more_body": False})

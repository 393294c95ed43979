"""A small asyncio HTTP/1.1 client for the load generators: keep-alive connections,
Content-Length and chunked bodies, and Server-Sent Events read as they arrive.
Raw asyncio streams, so the bench adds no dependency; every read has a timeout."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator


class HttpError(Exception):
    pass


class Connection:
    def __init__(self, host: str, port: int, timeout: float = 30.0):
        self.host, self.port, self.timeout = host, port, timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, limit=1 << 20), self.timeout
        )

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self.writer.wait_closed()
            self.writer = self.reader = None

    async def _send(self, method: str, path: str, headers: dict[str, str], body: bytes | None) -> None:
        if self.writer is None:
            await self.open()
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if body is not None:
            lines.append(f"Content-Length: {len(body)}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b""))
        await self.writer.drain()

    async def _head(self) -> tuple[int, dict[str, str]]:
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), self.timeout)
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        return status, headers

    async def _chunks(self, headers: dict[str, str]) -> AsyncIterator[bytes]:
        """The body as it arrives (chunked), or at once (Content-Length)."""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size_line = await asyncio.wait_for(self.reader.readuntil(b"\r\n"), self.timeout)
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    await asyncio.wait_for(self.reader.readuntil(b"\r\n"), self.timeout)
                    return
                data = await asyncio.wait_for(self.reader.readexactly(size + 2), self.timeout)
                yield data[:-2]
        elif "content-length" in headers:
            length = int(headers["content-length"])
            if length:
                yield await asyncio.wait_for(self.reader.readexactly(length), self.timeout)
        else:  # read to close
            while data := await asyncio.wait_for(self.reader.read(65536), self.timeout):
                yield data
            await self.close()

    async def request(self, method: str, path: str, headers: dict[str, str], body: bytes | None = None):
        """(status, headers, body bytes)."""
        await self._send(method, path, headers, body)
        status, response_headers = await self._head()
        content = b"".join([chunk async for chunk in self._chunks(response_headers)])
        if response_headers.get("connection", "").lower() == "close":
            await self.close()
        return status, response_headers, content

    async def json(self, method: str, path: str, headers: dict[str, str], payload: dict | None = None):
        body = json.dumps(payload).encode() if payload is not None else None
        extra = {"Content-Type": "application/json", "Accept": "application/json"} if body is not None else {}
        status, _, content = await self.request(method, path, {**headers, **extra}, body)
        try:
            return status, json.loads(content) if content else None
        except ValueError:
            return status, content[:300]

    async def events(self, path: str, headers: dict[str, str]) -> AsyncIterator[tuple[str, str]]:
        """GET an SSE stream; yields ("open", "") once the head and first bytes arrived, then
        (event, data) per event, until the server ends the response."""
        await self._send("GET", path, {**headers, "Accept": "text/event-stream"}, None)
        status, response_headers = await self._head()
        if status != 200:
            content = b"".join([chunk async for chunk in self._chunks(response_headers)])
            raise HttpError(f"{status}: {content[:200]!r}")
        buffer = b""
        opened = False
        async for chunk in self._chunks(response_headers):
            buffer += chunk
            if not opened:
                opened = True
                yield "open", ""
            while b"\n\n" in buffer:
                frame, buffer = buffer.split(b"\n\n", 1)
                kind, data = "message", ""
                for line in frame.decode().split("\n"):
                    if line.startswith("event:"):
                        kind = line[6:].strip()
                    elif line.startswith("data:"):
                        data = line[5:].strip()
                if data or kind != "message":
                    yield kind, data
        if response_headers.get("connection", "").lower() == "close":
            await self.close()

"""A fake agent runtime on loopback for the benchmarks (the AgentCore HTTP contract, minimal).

`POST /invocations` records when the call arrived (wall clock, keyed by the
request's invocation_id), waits `--delay` seconds without blocking anyone else
(asyncio: many calls wait at once), then answers the JSON document: a short
answer and its usage. `GET /ping` answers Healthy. `GET /_bench/receipts`
returns {invocation_id: arrival time} and the most calls that were in flight at
once; `POST /_bench/reset` forgets them. It checks no token: it stands in for
the runtime's own work, which the benchmarks leave out.

    python -m tests.bench.fake_runtime --port 18080 --delay 0.2
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time

ANSWER = {
    "output": "Refunds are accepted within 30 days.",
    "citations": [],
    "tool_calls": [],
    "usage": {"input_tokens": 42, "output_tokens": 9, "estimated": False},
    "model": "offline-small",
}


class FakeRuntime:
    def __init__(self, delay: float):
        self.delay = delay
        self.receipts: dict[str, float] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                received = time.time()
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                keep_alive = headers.get("connection", "").lower() != "close"
                status, document = await self.route(method, path, body, received)
                payload = json.dumps(document).encode()
                writer.write(
                    f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
                    f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
                if not keep_alive:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def route(self, method: str, path: str, body: bytes, received: float) -> tuple[str, dict]:
        if method == "POST" and path == "/invocations":
            self.calls += 1
            try:
                invocation_id = str(json.loads(body).get("invocation_id", ""))
            except ValueError:
                return "400 Bad Request", {"error": {"code": "bad_request", "message": "not JSON"}}
            self.receipts[invocation_id] = received
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                if self.delay:
                    await asyncio.sleep(self.delay)
            finally:
                self.in_flight -= 1
            return "200 OK", ANSWER
        if method == "GET" and path == "/ping":
            return "200 OK", {"status": "Healthy", "time_of_last_update": int(time.time())}
        if method == "GET" and path == "/_bench/receipts":
            return "200 OK", {"receipts": self.receipts, "max_in_flight": self.max_in_flight, "calls": self.calls}
        if method == "POST" and path == "/_bench/reset":
            self.receipts.clear()
            self.max_in_flight = self.calls = 0
            return "200 OK", {}
        return "404 Not Found", {"error": {"code": "not_found", "message": path}}


async def serve(port: int, delay: float) -> None:
    runtime = FakeRuntime(delay)
    server = await asyncio.start_server(runtime.handle, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.delay))


if __name__ == "__main__":
    main()

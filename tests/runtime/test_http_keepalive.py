"""HttpRuntimeClient keeps connections alive between calls, and only those it may."""

from __future__ import annotations

import json
import socket
import threading

from agents.runtime.clients import HttpRuntimeClient
from agents.runtime.contract import Delta, Done, encode_sse
from tests.runtime import helpers

ANSWER = json.dumps({"output": "ok", "usage": {"input_tokens": 1, "output_tokens": 1}, "model": "m"}).encode()


class KeepAliveServer:
    """HTTP/1.1 on loopback that counts the connections it accepts; `reply(n)` gives the
    n-th response's (head lines, body, close after it)."""

    def __init__(self, reply):
        self.reply = reply
        self.accepted = 0
        self.requests = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        with conn, reader:
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = reader.readline()
                    if not line:
                        return
                    head += line
                length = next(
                    (int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")), 0
                )
                reader.read(length)
                self.requests += 1
                lines, body, close = self.reply(self.requests)
                conn.sendall("\r\n".join(["HTTP/1.1 200 OK", *lines, "", ""]).encode() + body)
                if close:
                    return

    def __enter__(self) -> KeepAliveServer:
        return self

    def __exit__(self, *exc) -> None:
        self._sock.close()


def json_reply(*extra: str, close: bool = False):
    return ["Content-Type: application/json", f"Content-Length: {len(ANSWER)}", *extra], ANSWER, close


def answer(client: HttpRuntimeClient, token: str) -> list:
    return list(client.invoke(helpers.request(stream=False), helpers.context(token)))


def test_it_reuses_a_kept_alive_connection(token):
    with KeepAliveServer(lambda n: json_reply()) as server:
        client = HttpRuntimeClient(server.url)
        results = [answer(client, token) for _ in range(3)]
    assert results[0] == results[1] == results[2]
    assert (server.requests, server.accepted) == (3, 1)


def test_it_calls_again_on_a_new_connection_when_the_server_closed_the_idle_one(token):
    # The server drops each connection after answering, without saying so (an idle timeout).
    with KeepAliveServer(lambda n: json_reply(close=True)) as server:
        client = HttpRuntimeClient(server.url)
        answer(client, token)
        helpers.wait_until(lambda: server.accepted == 1)
        second = answer(client, token)
    assert second[-1] == Done()
    assert (server.requests, server.accepted) == (2, 2)


def test_it_does_not_keep_a_connection_the_server_closes(token):
    with KeepAliveServer(lambda n: json_reply("Connection: close", close=True)) as server:
        client = HttpRuntimeClient(server.url)
        answer(client, token)
        answer(client, token)
    assert (server.requests, server.accepted) == (2, 2)
    assert client._idle == []


def test_it_does_not_keep_a_stream_left_before_its_end(token):
    # Bytes after "done" that the client never reads: the connection cannot carry another call.
    body = encode_sse(Delta("hi")) + encode_sse(Done()) + b": trailing comment\n\n"
    lines = ["Content-Type: text/event-stream", f"Content-Length: {len(body)}"]
    with KeepAliveServer(lambda n: (lines, body, False)) as server:
        client = HttpRuntimeClient(server.url)
        first = list(client.invoke(helpers.request(stream=True), helpers.context(token)))
        second = list(client.invoke(helpers.request(stream=True), helpers.context(token)))
    assert first == second == [Delta("hi"), Done()]
    assert (server.requests, server.accepted) == (2, 2)

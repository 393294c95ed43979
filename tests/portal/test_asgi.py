"""portal.asgi: Django's middleware and views run synchronously on a pooled request
thread; answers are the same as through Django's own handler."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import async_to_sync

from tenants.identity import tokens

pytestmark = pytest.mark.django_db(transaction=True)  # the request threads have connections of their own


def call(method: str, path: str, *headers: tuple[bytes, bytes], body: bytes = b"") -> tuple[int, dict, bytes]:
    from portal.asgi import application

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    sent: list[dict] = []
    received = False

    async def receive():
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    async def run():
        await asyncio.wait_for(application(scope, receive, send), 10)

    async_to_sync(run)()
    start = sent[0]
    return start["status"], dict(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def test_it_answers_an_api_request_with_a_bearer_token(world):
    token = tokens.issue_user_token(world.a.member, world.a.tenant)
    status, headers, body = call("GET", "/api/v1/tenants/alpha/", (b"authorization", f"Bearer {token}".encode()))
    assert status == 200, body
    assert headers[b"Content-Type"] == b"application/json"
    assert json.loads(body)["slug"] == "alpha"


def test_it_answers_problem_json_without_credentials(world):
    status, headers, body = call("GET", "/api/v1/tenants/alpha/")
    assert status == 401
    assert headers[b"Content-Type"] == b"application/problem+json"
    assert headers[b"WWW-Authenticate"] == b'Bearer realm="api"'
    assert json.loads(body)["status"] == 401


def test_it_answers_another_tenants_url_with_404(world):
    token = tokens.issue_user_token(world.a.member, world.a.tenant)
    status, _, body = call("GET", "/api/v1/tenants/bravo/", (b"authorization", f"Bearer {token}".encode()))
    assert status == 404
    assert b"Bravo" not in body


def test_it_posts_a_form_through_the_middleware(world):
    # CSRF is enforced on a session-less form POST, as through Django's own handler.
    status, _, _ = call("POST", "/accounts/login/", (b"content-type", b"application/x-www-form-urlencoded"))
    assert status == 403


def test_it_serves_the_health_check(world):
    status, _, body = call("GET", "/healthz")
    assert status == 200


# --- how many views run at once -----------------------------------------------------------


def _scope(path: str) -> dict:
    return {"type": "http", "method": "GET", "path": path, "query_string": b"", "headers": []}


def _serve_concurrently(monkeypatch, inner, paths: list[str], limit: int | asyncio.Semaphore) -> list[list[dict]]:
    """Run `paths` through portal.asgi.application at once, with `inner` as Django and at
    most `limit` views at once (or that semaphore itself)."""
    import portal.asgi

    monkeypatch.setattr(portal.asgi, "django_application", inner)
    monkeypatch.setattr(portal.asgi, "signed_stream", lambda scope: None)
    sent: list[list[dict]] = [[] for _ in paths]

    async def run():
        semaphore = limit if isinstance(limit, asyncio.Semaphore) else asyncio.Semaphore(limit)
        monkeypatch.setattr(portal.asgi, "_views", semaphore)

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def one(i, path):
            async def send(message):
                sent[i].append(message)

            await portal.asgi.application(_scope(path), receive, send)

        await asyncio.wait_for(asyncio.gather(*(one(i, p) for i, p in enumerate(paths))), 10)

    async_to_sync(run)()
    return sent


def test_no_more_views_run_at_once_than_the_limit(monkeypatch):
    running, most = 0, 0

    async def inner(scope, receive, send):
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.02)  # a view at work (a database round trip, say)
        running -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    sent = _serve_concurrently(monkeypatch, inner, [f"/r{i}" for i in range(6)], limit=2)
    assert most == 2
    assert all(messages[0]["status"] == 200 for messages in sent)


def test_a_started_response_gives_its_place_back(monkeypatch):
    # An event stream opened without a stream token keeps its thread for as long as it
    # lasts; once its headers are out it must not keep other requests waiting.
    stream_open = asyncio.Event
    events: dict[str, asyncio.Event] = {}

    async def inner(scope, receive, send):
        if scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            events.setdefault("other_done", stream_open())
            await asyncio.wait_for(events["other_done"].wait(), 5)  # still streaming…
            await send({"type": "http.response.body", "body": b"data: end\n\n"})
            return
        await asyncio.sleep(0.01)  # let the stream start first
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        events.setdefault("other_done", stream_open()).set()

    sent = _serve_concurrently(monkeypatch, inner, ["/stream", "/page"], limit=1)
    assert sent[1][0]["status"] == 200  # served while the stream was open (else: timeout)
    assert sent[0][-1]["body"] == b"data: end\n\n"


def test_a_view_that_fails_gives_its_place_back(monkeypatch):
    calls = 0

    async def inner(scope, receive, send):
        nonlocal calls
        calls += 1
        if scope["path"] == "/boom":
            raise RuntimeError("the client went away")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    places = asyncio.Semaphore(1)  # one place, used by both runs (it binds to no loop until it is waited on)
    with pytest.raises(RuntimeError):
        _serve_concurrently(monkeypatch, inner, ["/boom"], limit=places)
    sent = _serve_concurrently(monkeypatch, inner, ["/a", "/b"], limit=places)  # a lost place: timeout
    assert [messages[0]["status"] for messages in sent] == [200, 200]

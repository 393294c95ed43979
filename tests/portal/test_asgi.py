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

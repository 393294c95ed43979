"""Upload bodies over the limit are refused before they are read (U1).

The knowledge upload routes (the screen's and the API's) accept one file of at most
KNOWLEDGE_MAX_UPLOAD_BYTES, plus a little form around it. A body that says it is larger
(Content-Length) is refused without reading a byte of it; one that does not say
(chunked) is read only until it passes the limit. Under ASGI (uvicorn, `make run`)
Django would otherwise spool the whole body to memory and disk before any middleware
or view ran; under WSGI (and Django's test client) the middleware refuses it.
"""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import async_to_sync

from agents.knowledge.models import Document
from agents.knowledge.uploads import FORM_OVERHEAD_BYTES
from tenants.context import tenant_context
from tests.knowledge.helpers import entitle, make_kb

LIMIT = 1024  # KNOWLEDGE_MAX_UPLOAD_BYTES in these tests
BODY_LIMIT = LIMIT + FORM_OVERHEAD_BYTES
CHUNK = 16 * 1024
XHR = {"HTTP_X_REQUESTED_WITH": "XMLHttpRequest", "HTTP_ACCEPT": "application/json"}


@pytest.fixture
def admin(client, world, settings):
    settings.KNOWLEDGE_MAX_UPLOAD_BYTES = LIMIT
    entitle(world.a.tenant, world.b.tenant)
    client.force_login(world.a.admin)
    return client


class CountingInput:
    """A WSGI input of `size` bytes that counts how many were read."""

    def __init__(self, size: int):
        self.size = size
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        left = self.size - self.read_bytes
        n = left if size is None or size < 0 else min(size, left)
        self.read_bytes += n
        return b"x" * n

    def readline(self, size: int = -1) -> bytes:
        return self.read(size)


def _post_counted(client, url: str, size: int, **extra):
    body = CountingInput(size)
    response = client.generic(
        "POST",
        url,
        b"",
        content_type="multipart/form-data; boundary=BOUNDARY",
        **{"CONTENT_LENGTH": str(size), "wsgi.input": body, **extra},
    )
    return response, body


def test_it_refuses_a_body_that_declares_more_than_the_limit_without_reading_it(admin, world):
    kb = make_kb(world.a)
    response, body = _post_counted(admin, f"/t/alpha/knowledge/{kb.pk}/upload/", 2 * 1024**3, **XHR)
    assert response.status_code == 413
    assert body.read_bytes == 0
    message = response.json()["results"][0]["message"]
    assert "2048.0 MB" in message and "larger than the 1 MB a file may have" in message
    with tenant_context(world.a.tenant):
        assert Document.objects.count() == 0


def test_the_form_without_javascript_gets_a_413_page_that_says_why(admin, world):
    kb = make_kb(world.a)
    response, body = _post_counted(admin, f"/t/alpha/knowledge/{kb.pk}/upload/", 5 * 1024**2)
    assert response.status_code == 413
    assert body.read_bytes == 0
    page = response.content.decode()
    assert "larger than the 1 MB a file may have" in page
    assert f'href="/t/alpha/knowledge/{kb.pk}/"' in page


def test_the_api_answers_413_problem_json_without_reading_the_body(admin, world):
    kb = make_kb(world.a)
    response, body = _post_counted(
        admin, "/api/v1/tenants/alpha/knowledge-documents/", 3 * 1024**2, QUERY_STRING=f"kb={kb.pk}"
    )
    assert response.status_code == 413
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert (problem["status"], problem["title"]) == (413, "Upload too large")
    assert "3.0 MB" in problem["detail"]
    assert body.read_bytes == 0


def test_a_body_within_the_limit_still_reaches_the_view(admin, world):
    from django.core.files.uploadedfile import SimpleUploadedFile

    kb = make_kb(world.a)
    response = admin.post(
        f"/t/alpha/knowledge/{kb.pk}/upload/", {"files": SimpleUploadedFile("a.txt", b"x" * LIMIT)}, **XHR
    )
    assert response.status_code == 200
    assert response.json()["results"][0]["ok"] is True


# --- under ASGI: what uvicorn runs ----------------------------------------------------------------

# Django's ASGI handler closes old connections at the start of each request (request_started),
# which a test transaction would not survive on PostgreSQL.
ASGI = pytest.mark.django_db(transaction=True)


class Receive:
    """An ASGI client sending `total` bytes in chunks; counts what the app took."""

    def __init__(self, total: int):
        self.total = total
        self.sent = 0

    async def __call__(self):
        if self.sent >= self.total:
            await asyncio.sleep(3600)  # the client waits for the answer; it never disconnects here
        n = min(CHUNK, self.total - self.sent)
        self.sent += n
        return {"type": "http.request", "body": b"x" * n, "more_body": self.sent < self.total}


def _asgi_post(client, path: str, receive: Receive, headers: list[tuple[bytes, bytes]], boundary: str = "BOUNDARY"):
    from portal.asgi import django_application

    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            (b"cookie", cookie),
            (b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
            (b"x-requested-with", b"XMLHttpRequest"),
            (b"accept", b"application/json"),
            *headers,
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    messages = []

    async def send(message):
        messages.append(message)

    async_to_sync(django_application)(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], body


@ASGI
def test_under_asgi_a_declared_large_body_is_refused_before_it_is_received(admin, world):
    kb = make_kb(world.a)
    receive = Receive(total=1024**2)
    status, body = _asgi_post(
        admin, f"/t/alpha/knowledge/{kb.pk}/upload/", receive, [(b"content-length", str(1024**2).encode())]
    )
    assert status == 413
    assert receive.sent == 0
    assert b"larger than the 1 MB a file may have" in body


@ASGI
def test_under_asgi_a_chunked_body_is_read_only_until_it_passes_the_limit(admin, world):
    receive = Receive(total=4 * BODY_LIMIT)
    status, body = _asgi_post(admin, "/api/v1/tenants/alpha/knowledge-documents/", receive, [])
    assert status == 413
    assert BODY_LIMIT < receive.sent <= BODY_LIMIT + CHUNK
    assert b"Upload too large" in body


def test_the_limit_applies_to_exactly_the_upload_routes():
    from django.urls import reverse

    from agents.knowledge.uploads import body_limit

    ui = reverse("knowledge:upload", kwargs={"tenant_slug": "alpha", "kb_id": 7})
    api = reverse("api:knowledge-document-list", kwargs={"tenant_slug": "alpha"})
    assert body_limit("POST", ui) == body_limit("POST", api) is not None
    assert body_limit("GET", api) is None
    assert body_limit("POST", reverse("knowledge:create", kwargs={"tenant_slug": "alpha"})) is None


@ASGI
def test_under_asgi_an_upload_within_the_limit_is_received_whole(admin, world):
    from django.test.client import BOUNDARY, encode_multipart

    from tenants.identity import tokens

    kb = make_kb(world.a)
    body = encode_multipart(BOUNDARY, {"knowledge_base": str(kb.pk), "file": _named(b"Refunds within 30 days.")})

    class Whole(Receive):
        async def __call__(self):
            if self.sent:
                await asyncio.sleep(3600)
            self.sent = len(body)
            return {"type": "http.request", "body": body, "more_body": False}

    token = tokens.issue_user_token(world.a.admin, world.a.tenant)
    headers = [
        (b"content-length", str(len(body)).encode()),
        (b"authorization", f"Bearer {token}".encode()),
    ]
    status, answer = _asgi_post(
        admin, "/api/v1/tenants/alpha/knowledge-documents/", Whole(0), headers, boundary=BOUNDARY
    )
    assert status == 201, answer
    with tenant_context(world.a.tenant):
        assert Document.objects.get().size == len(b"Refunds within 30 days.")


def _named(data: bytes):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("refunds.txt", data)

"""Upload bodies over the limit are refused before they are read.

A knowledge upload (the screen's `knowledge:upload`, the API's knowledge-documents
create) carries one file of at most KNOWLEDGE_MAX_UPLOAD_BYTES plus a little form
around it (field names, the CSRF token, multipart boundaries): FORM_OVERHEAD_BYTES.
Anything larger is refused here, so a 2 GB POST costs a header's worth of work, not
2 GB of memory and disk:

* under ASGI (uvicorn: `make run`, production) Django's handler spools the whole body
  before any middleware or view runs; portal.asgi.DjangoHandler therefore asks
  `guard_asgi_body` first: a Content-Length over the limit is refused without
  receiving a byte, and a body without one (chunked) is received only until it passes
  the limit. Either way Django then gets an empty body and the scope says why;
* `UploadLimitMiddleware` answers such a request (and, under WSGI, one whose
  Content-Length is over the limit) before the CSRF check or the view reads the body:
  413 problem JSON for the API, 413 with the upload's usual JSON for the page's
  script, and a 413 page saying why (with a way back) for the form without JavaScript.

The middleware changes nothing and stores nothing, so answering before the CSRF check
gives a forged request nothing.
"""

from __future__ import annotations

import asyncio
import re
import tempfile

from django.conf import settings
from django.core.exceptions import RequestAborted
from django.http import JsonResponse
from django.shortcuts import render
from django.urls import reverse

# The multipart framing and form fields around the one file a request carries.
FORM_OVERHEAD_BYTES = 64 * 1024
# Set in the ASGI scope when a body was refused: its declared size, or 0 when it had none.
SCOPE_KEY = "portal.upload_too_large"

# The upload routes (agents/knowledge/urls.py `upload`, portal/urls.py knowledge-documents);
# tests/knowledge/test_upload_limits.py holds these to the URLs Django reverses.
_UI_UPLOAD = re.compile(r"^/t/(?P<slug>[^/]+)/knowledge/(?P<kb>\d+)/upload/$")
_API_UPLOAD = re.compile(r"^/api/v1/tenants/[^/]+/knowledge-documents/$")


def body_limit(method: str, path: str) -> int | None:
    """The most bytes a request body to `path` may have, or None when this module sets none."""
    if method.upper() == "POST" and (_UI_UPLOAD.match(path) or _API_UPLOAD.match(path)):
        return settings.KNOWLEDGE_MAX_UPLOAD_BYTES + FORM_OVERHEAD_BYTES
    return None


def _length(value) -> int | None:
    text = value.decode("latin-1") if isinstance(value, bytes) else str(value or "")
    text = text.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) < 19 else None


def _mb(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MB"


def refusal_text(size: int | None) -> str:
    limit_mb = settings.KNOWLEDGE_MAX_UPLOAD_BYTES // (1024 * 1024) or 1
    what = f"The upload ({_mb(size)})" if size else "The upload"
    return (
        f"{what} is larger than the {limit_mb} MB a file may have, so it was not read and nothing was stored. "
        "Send one file per upload, each at most that size."
    )


# --- ASGI ----------------------------------------------------------------------------------------


class BodyGuard:
    """The `receive` Django's ASGI handler gets for a request with a body limit.

    `read_body()` stands in for the handler's own: it receives at most `limit` bytes
    into the same kind of spooled file, and refuses (an empty body, SCOPE_KEY in the
    scope) a body that declares or reaches more. After a refusal the rest of the body
    is never received: a later call (Django listens for a disconnect while the view
    runs) waits until the response is sent and the handler cancels it.
    """

    def __init__(self, scope: dict, receive, limit: int):
        self.scope = scope
        self._receive = receive
        self.limit = limit
        self.refused = False

    async def __call__(self):
        if self.refused:
            await asyncio.Event().wait()  # cancelled by Django once the response is sent
        return await self._receive()

    def _refuse(self, size: int | None, body_file) -> tempfile.SpooledTemporaryFile:
        body_file.close()
        self.refused = True
        self.scope[SCOPE_KEY] = size or 0
        # Django must not expect the bytes that were never received.
        self.scope["headers"] = [(k, v) for k, v in self.scope.get("headers", []) if k.lower() != b"content-length"]
        return tempfile.SpooledTemporaryFile(max_size=1, mode="w+b")

    async def read_body(self) -> tempfile.SpooledTemporaryFile:
        # Handed to Django, which closes it with the request (as it does its own).
        body_file = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE, mode="w+b")  # noqa: SIM115
        declared = next(
            (_length(v) for k, v in self.scope.get("headers", []) if k.lower() == b"content-length"),
            None,
        )
        if declared is not None and declared > self.limit:
            return self._refuse(declared, body_file)
        received = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                body_file.close()
                raise RequestAborted()
            chunk = message.get("body", b"")
            received += len(chunk)
            if received > self.limit:
                return self._refuse(declared, body_file)
            body_file.write(chunk)
            if not message.get("more_body", False):
                break
        body_file.seek(0)
        return body_file


def guard_asgi_body(scope: dict, receive):
    """(scope, receive) for Django's ASGI handler: a BodyGuard on a copy of the scope for
    the upload routes, the originals elsewhere."""
    limit = body_limit(scope.get("method", ""), scope.get("path", ""))
    if scope.get("type") != "http" or limit is None:
        return scope, receive
    scope = dict(scope)
    return scope, BodyGuard(scope, receive, limit)


# --- Django middleware ---------------------------------------------------------------------------


class UploadLimitMiddleware:
    """Answers 413 for an upload body over the limit, before the CSRF check or the view
    reads it. Listed before CsrfViewMiddleware: its process_view runs first, after the
    session, the user and the tenant (TenantMiddleware: an outsider still gets 404) are set."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_view(self, request, view_func, view_args, view_kwargs):
        limit = body_limit(request.method, request.path_info)
        if limit is None:
            return None
        refused = getattr(request, "scope", {}).get(SCOPE_KEY)
        declared = _length(request.META.get("CONTENT_LENGTH"))
        if refused is None and (declared is None or declared <= limit):
            return None
        return refusal_response(request, refused or declared)


def refusal_response(request, size: int | None):
    from portal.api import problem_response

    detail = refusal_text(size)
    if _API_UPLOAD.match(request.path_info):
        return problem_response(413, "Upload too large", detail)
    wants_json = request.headers.get("X-Requested-With") == "XMLHttpRequest" or "application/json" in (
        request.headers.get("Accept", "")
    )
    if wants_json:  # the page's upload script shows results[0].message on the file's line
        return JsonResponse({"results": [{"file": "", "ok": False, "message": detail}]}, status=413)
    match = _UI_UPLOAD.match(request.path_info)
    back = reverse("knowledge:detail", kwargs={"tenant_slug": match["slug"], "kb_id": int(match["kb"])})
    return render(request, "knowledge/upload_too_large.html", {"message": detail, "back_url": back}, status=413)

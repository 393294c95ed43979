"""One way for the reference agent to POST JSON to the portal's gateways (no Django here).

The knowledge, memory and tools gateways all send the turn's act-on-behalf token
as a bearer token and a JSON body, and read a JSON answer of bounded size. What
differs is only how each names a failure, so `post_json` raises two exceptions
that each gateway maps to its own (KnowledgeUnavailable, MemoryUnavailable,
ToolFailed):

* `GatewayHTTPError`: the portal answered with an error status; `detail` is the
  problem JSON's `detail` when it sent one (a reason the model may read), else None;
* `GatewayUnreachable`: no answer (connection, timeout, not JSON).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


class GatewayHTTPError(Exception):
    def __init__(self, status: int, detail: str | None):
        super().__init__(detail or f"HTTP {status}")
        self.status = status
        self.detail = detail


class GatewayUnreachable(Exception):
    pass


def check_url(base_url: str) -> str:
    """`base_url` without its trailing slash; ValueError unless it is http(s) (urllib opens file: too)."""
    if not base_url.startswith(("http://", "https://")):
        raise ValueError("PORTAL_GATEWAY_URL must be an http(s) URL")
    return base_url.rstrip("/")


def problem_detail(body: bytes) -> str | None:
    """The `detail` of a problem JSON body, cut to a length a model may read; None without one."""
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if isinstance(document, dict) and isinstance(document.get("detail"), str) and document["detail"]:
        return document["detail"][:500]
    return None


def post_json(
    url: str,
    token: str,
    body: Any,
    *,
    timeout: float,
    max_bytes: int,
    headers: dict[str, str] | None = None,
) -> Any:
    """POST `body` as JSON with `token` as the bearer; the decoded JSON answer (None for an empty one).

    `url` must have been checked with `check_url`. Raises GatewayHTTPError or GatewayUnreachable."""
    request = urllib.request.Request(  # noqa: S310 (scheme checked by check_url)
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            **(headers or {}),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            raw = response.read(max_bytes)
            return json.loads(raw) if raw.strip() else None
    except urllib.error.HTTPError as exc:
        raise GatewayHTTPError(exc.code, problem_detail(exc.read(max_bytes))) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise GatewayUnreachable(str(exc)) from exc

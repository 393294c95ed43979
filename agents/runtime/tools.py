"""How the reference agent runs tools: through the portal's tools gateway, never in the runtime.

Architecture §5.3: the runtime calls tools with the act-on-behalf token of the
turn (aud ``agent-runtime``, scope ``tools:invoke``); the portal validates it,
takes the tenant and the acting user from it, checks the agent may use the tool
there, validates the input against the tool's schema and runs the handler.

* :class:`HttpToolGateway` POSTs to ``<PORTAL_GATEWAY_URL>/api/v1/gateway/tools/invoke``
  (``http`` and ``agentcore`` runtimes);
* the in-process ``local`` runtime gets ``agents.tools.gateway.InProcessToolGateway``
  from the portal, which calls the same service function without a loopback request.

A refused or failed call is not a failed turn: :class:`ToolFailed` carries the
reason, which the agent reports on the tool call and gives the model as the
tool's (error) result.

Nothing here imports Django.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Protocol

from agents.runtime.auth import Caller

INVOKE_PATH = "/api/v1/gateway/tools/invoke"
SCOPE = "tools:invoke"
MAX_RESPONSE_BYTES = 1024 * 1024
MAX_TOOL_ROUNDS = 5


class ToolFailed(Exception):
    """The gateway refused the call or the tool could not run; ``str()`` is a reason the model may read."""


class ToolGateway(Protocol):
    def invoke(self, caller: Caller, name: str, tool_input: dict, *, agent_id: str) -> Any:
        """The tool's result (JSON-able). May raise ToolFailed."""


def wants_tools(caller: Caller) -> bool:
    return SCOPE in caller.scopes and bool(caller.token)


def _reason(body: bytes, status: int) -> str:
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("detail"), str) and document["detail"]:
        return document["detail"][:500]
    return f"the portal refused the tool call ({status})"


class HttpToolGateway:
    def __init__(self, base_url: str, *, timeout: float = 15.0):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError("PORTAL_GATEWAY_URL must be an http(s) URL")
        self.url = base_url.rstrip("/") + INVOKE_PATH
        self.timeout = timeout

    def invoke(self, caller: Caller, name: str, tool_input: dict, *, agent_id: str) -> Any:
        body = json.dumps({"tool": name, "input": tool_input, "agent": agent_id})
        request = urllib.request.Request(  # noqa: S310 (scheme checked in __init__)
            self.url,
            data=body.encode(),
            method="POST",
            headers={
                "Authorization": f"Bearer {caller.token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                document = json.loads(response.read(MAX_RESPONSE_BYTES))
        except urllib.error.HTTPError as exc:
            raise ToolFailed(_reason(exc.read(MAX_RESPONSE_BYTES), exc.code)) from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise ToolFailed(f"the portal's tools gateway is unreachable: {exc}") from exc
        if not isinstance(document, dict) or "result" not in document:
            raise ToolFailed("the tools gateway's answer has no result")
        return document["result"]

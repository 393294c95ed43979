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

from typing import Any, Protocol

from agents.runtime import gateway_http as http
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


class HttpToolGateway:
    def __init__(self, base_url: str, *, timeout: float = 15.0):
        self.url = http.check_url(base_url) + INVOKE_PATH
        self.timeout = timeout

    def invoke(self, caller: Caller, name: str, tool_input: dict, *, agent_id: str) -> Any:
        body = {"tool": name, "input": tool_input, "agent": agent_id}
        try:
            document = http.post_json(self.url, caller.token, body, timeout=self.timeout, max_bytes=MAX_RESPONSE_BYTES)
        except http.GatewayHTTPError as exc:
            raise ToolFailed(exc.detail or f"the portal refused the tool call ({exc.status})") from exc
        except http.GatewayUnreachable as exc:
            raise ToolFailed(f"the portal's tools gateway is unreachable: {exc}") from exc
        if not isinstance(document, dict) or "result" not in document:
            raise ToolFailed("the tools gateway's answer has no result")
        return document["result"]

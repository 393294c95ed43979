"""How the reference agent runs tools: through the portal's tools gateway, never in the runtime.

Architecture §5.3: the runtime calls tools with the act-on-behalf token of the
turn (aud ``agent-runtime``, scope ``tools:invoke``); the portal validates it,
takes the tenant and the acting user from it, checks the agent may use the tool
there, validates the input against the tool's schema and runs the handler.

* :class:`HttpToolGateway` is an MCP client (JSON-RPC over Streamable HTTP, revision
  2025-06-18) of ``<PORTAL_GATEWAY_URL>/api/v1/gateway/mcp`` (``http`` and ``agentcore``
  runtimes): ``initialize`` once per turn, then ``tools/call``;
* the in-process ``local`` runtime gets ``agents.tools.gateway.InProcessToolGateway``
  from the portal, which calls the same service function without a loopback request.

A refused or failed call is not a failed turn: :class:`ToolFailed` carries the
reason, which the agent reports on the tool call and gives the model as the
tool's (error) result.

Nothing here imports Django.
"""

from __future__ import annotations

import itertools
import json
import threading
import urllib.parse
from collections import OrderedDict
from typing import Any, Protocol

from agents.runtime import gateway_http as http
from agents.runtime.auth import Caller

MCP_PATH = "/api/v1/gateway/mcp"
PROTOCOL_VERSION = "2025-06-18"
CLIENT_INFO = {"name": "reference-agent", "version": "1.0"}
MAX_RESULT_TEXT = 64 * 1024
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
    """An MCP client (revision 2025-06-18, Streamable HTTP) of the portal's tools gateway.

    Per caller (the turn's token) it initializes once (``initialize`` then
    ``notifications/initialized``), then sends ``tools/call``. A JSON-RPC error or a
    result with ``isError`` is a ToolFailed with the reason the server gave."""

    # Turns whose token is initialized, newest last; a token lives minutes, a turn is one token.
    MAX_SESSIONS = 256

    def __init__(self, base_url: str, *, timeout: float = 15.0):
        self.url = http.check_url(base_url) + MCP_PATH
        self.timeout = timeout
        self._initialized: OrderedDict[str, str] = OrderedDict()  # token → negotiated protocol version
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def _post(self, caller: Caller, agent_id: str, message: dict, *, version: str | None) -> Any:
        headers = {"Accept": "application/json, text/event-stream"}
        if version is not None:
            headers["MCP-Protocol-Version"] = version
        try:
            # The tenant the runtime serves (its header, which the token was checked against):
            # the gateway refuses a token of any other, as the knowledge and memory gateways do.
            query = {**({"agent": agent_id} if agent_id else {}), "tenant_id": caller.tenant.tenant_id}
            url = self.url + "?" + urllib.parse.urlencode(query)
            return http.post_json(
                url, caller.token, message, timeout=self.timeout, max_bytes=MAX_RESPONSE_BYTES, headers=headers
            )
        except http.GatewayHTTPError as exc:
            raise ToolFailed(exc.detail or f"the portal refused the tool call ({exc.status})") from exc
        except http.GatewayUnreachable as exc:
            raise ToolFailed(f"the portal's tools gateway is unreachable: {exc}") from exc

    def _request(self, caller: Caller, agent_id: str, method: str, params: dict, *, version: str | None) -> dict:
        message_id = next(self._ids)
        document = self._post(
            caller, agent_id, {"jsonrpc": "2.0", "id": message_id, "method": method, "params": params}, version=version
        )
        if not isinstance(document, dict) or document.get("id") != message_id:
            raise ToolFailed("the tools gateway sent no answer to the call")
        error = document.get("error")
        if isinstance(error, dict):
            raise ToolFailed(str(error.get("message") or "the tools gateway refused the call")[:500])
        if not isinstance(document.get("result"), dict):
            raise ToolFailed("the tools gateway's answer has no result")
        return document["result"]

    def _session(self, caller: Caller, agent_id: str) -> str:
        with self._lock:
            version = self._initialized.get(caller.token)
            if version is not None:
                self._initialized.move_to_end(caller.token)
                return version
        result = self._request(
            caller,
            agent_id,
            "initialize",
            {"protocolVersion": PROTOCOL_VERSION, "capabilities": {}, "clientInfo": CLIENT_INFO},
            version=None,
        )
        version = result.get("protocolVersion")
        if version != PROTOCOL_VERSION:
            raise ToolFailed(f"the tools gateway speaks MCP {str(version)[:20]}, not {PROTOCOL_VERSION}")
        self._post(caller, agent_id, {"jsonrpc": "2.0", "method": "notifications/initialized"}, version=version)
        with self._lock:
            self._initialized[caller.token] = version
            while len(self._initialized) > self.MAX_SESSIONS:
                self._initialized.popitem(last=False)
        return version

    def invoke(self, caller: Caller, name: str, tool_input: dict, *, agent_id: str) -> Any:
        version = self._session(caller, agent_id)
        result = self._request(caller, agent_id, "tools/call", {"name": name, "arguments": tool_input}, version=version)
        if result.get("isError"):
            raise ToolFailed(text_of(result) or "the tool failed")
        if "structuredContent" in result:
            return result["structuredContent"]
        text = text_of(result)
        try:
            return json.loads(text)
        except ValueError:
            return text


def text_of(result: dict) -> str:
    """The text items of an MCP tools/call result, joined, capped at MAX_RESULT_TEXT."""
    content = result.get("content")
    if not isinstance(content, list):
        return ""
    texts = [item["text"] for item in content if isinstance(item, dict) and isinstance(item.get("text"), str)]
    return "\n".join(texts)[:MAX_RESULT_TEXT]

"""The tools gateway as a Model Context Protocol server (revision 2025-06-18, Streamable HTTP).

`POST /api/v1/gateway/mcp` takes one JSON-RPC 2.0 message per request, with the
turn's act-on-behalf token (aud agent-runtime, scope tools:invoke) as the bearer:

* the token and the acting agent are checked first, by the gateways' one prologue
  (tenants.identity.gateway); a refusal is an HTTP 401/403 problem (with
  WWW-Authenticate on 401), before any JSON-RPC is read;
* ``initialize`` negotiates the protocol revision (we speak 2025-06-18 only, and
  answer it to any other offer, as the spec says), ``ping`` answers {};
* ``tools/list`` is exactly the tools the token's tenant enabled for the acting
  agent and its plan allows (agents.tools.services.listed_tools); for a silo tenant
  whose own AgentCore Gateway serves its tools (agents.tools.agentcore), those of
  them the gateway lists, as it describes them;
* ``tools/call`` runs the tool through the same function as the REST route
  (services.invoke: entitlement, schema, handler and its time limit — or, for such a
  silo tenant, its AgentCore Gateway — and result screening); a refused or failed
  call is a result with ``isError: true`` and the reason as text, so that the model
  can read it; an unknown tool is -32602;
* notifications and responses from the client are accepted with 202 and no body;
* batches (JSON arrays) were removed in 2025-06-18: refused with -32600.

The server is stateless (no Mcp-Session-Id): every request carries the token,
which is all the state there is. No server-to-client stream: GET answers 405,
which the transport allows.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.http import HttpResponse, JsonResponse

from agents.tools import services
from tenants.identity.gateway import AgentCall, GatewayRefused

log = logging.getLogger(__name__)

PROTOCOL_VERSION = "2025-06-18"
# Revisions whose MCP-Protocol-Version header we accept: ours, and the older ones a
# client may name before it negotiated (a missing header means 2025-03-26).
ACCEPTED_HEADER_VERSIONS = frozenset({"2024-11-05", "2025-03-26", PROTOCOL_VERSION})
SERVER_INFO = {"name": "tenant-portal-tools", "title": "Tenant portal tools gateway", "version": "1.0"}

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603


class RpcError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _error(message_id, code: int, message: str) -> dict:
    return {"jsonrpc": "2.0", "id": message_id, "error": {"code": code, "message": message}}


def _reply(document: dict, status: int = 200) -> JsonResponse:
    return JsonResponse(document, status=status)


def _valid_id(value) -> bool:
    # MCP: a request id is a string or an integer, never null (and a bool is no integer).
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def handle(body: bytes, call: AgentCall) -> HttpResponse:
    """One Streamable HTTP POST body for an authorised agent call (in its tenant's context)."""
    try:
        message = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _reply(_error(None, PARSE_ERROR, "Parse error: the body is not JSON."), status=400)
    if isinstance(message, list):
        return _reply(
            _error(None, INVALID_REQUEST, f"Batches are not supported in protocol revision {PROTOCOL_VERSION}."),
            status=400,
        )
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return _reply(_error(None, INVALID_REQUEST, "Invalid Request: send one JSON-RPC 2.0 object."), status=400)
    method = message.get("method")
    if method is None and ("result" in message or "error" in message) and _valid_id(message.get("id")):
        return HttpResponse(status=202)  # a response to a server request: we send none, nothing to do
    if not isinstance(method, str):
        return _reply(_error(message.get("id"), INVALID_REQUEST, "Invalid Request: no method."), status=400)
    if "id" not in message:
        return HttpResponse(status=202)  # a notification (notifications/initialized, cancelled …): accepted
    message_id = message["id"]
    if not _valid_id(message_id):
        return _reply(_error(None, INVALID_REQUEST, "Invalid Request: the id must be a string or an integer."), 400)
    params = message.get("params", {})
    if not isinstance(params, dict):
        return _reply(_error(message_id, INVALID_PARAMS, "Invalid params: params must be an object."))
    try:
        result = _dispatch(method, params, call)
    except RpcError as exc:
        return _reply(_error(message_id, exc.code, exc.message))
    return _reply({"jsonrpc": "2.0", "id": message_id, "result": result})


def _dispatch(method: str, params: dict, call: AgentCall) -> dict:
    if method == "initialize":
        return _initialize(params)
    if method == "ping":
        return {}
    if method == "tools/list":
        return _list_tools(params, call)
    if method == "tools/call":
        return _call_tool(params, call)
    raise RpcError(METHOD_NOT_FOUND, f"Method not found: {method[:100]}")


def _initialize(params: dict) -> dict:
    if not isinstance(params.get("protocolVersion"), str):
        raise RpcError(INVALID_PARAMS, "Invalid params: protocolVersion is required.")
    # Negotiation: the client's revision when we speak it, else ours (the client decides
    # whether it can go on). We speak one.
    return {
        "protocolVersion": PROTOCOL_VERSION,
        "capabilities": {"tools": {"listChanged": False}},
        "serverInfo": SERVER_INFO,
        "instructions": "Tools this organisation enabled for the acting agent; results are screened.",
    }


def _list_tools(params: dict, call: AgentCall) -> dict:
    cursor = params.get("cursor")
    if cursor is not None and not isinstance(cursor, str):
        raise RpcError(INVALID_PARAMS, "Invalid params: cursor must be a string.")
    # One page: an agent has a handful of tools; a cursor we never issued names nothing more.
    if cursor:
        return {"tools": []}
    try:
        return {"tools": services.listed_tools(call)}
    except GatewayRefused as exc:  # the tenant's AgentCore Gateway could not say what it serves
        raise RpcError(INTERNAL_ERROR, exc.detail)


def _call_tool(params: dict, call: AgentCall) -> dict:
    name = params.get("name")
    arguments = params.get("arguments", {})
    if not isinstance(name, str) or not name:
        raise RpcError(INVALID_PARAMS, "Invalid params: name the tool to call.")
    if not isinstance(arguments, dict):
        raise RpcError(INVALID_PARAMS, "Invalid params: arguments must be an object.")
    try:
        result = services.invoke(call, name, arguments)
    except GatewayRefused as exc:
        if exc.status == 404:
            raise RpcError(INVALID_PARAMS, f"Unknown tool: {name[:64]}")
        # A tool execution error (refused, bad input, failed, too slow): a result the model reads.
        return {"content": [{"type": "text", "text": exc.detail}], "isError": True}
    answer: dict[str, Any] = {"content": [{"type": "text", "text": json.dumps(result, ensure_ascii=False)}]}
    if isinstance(result, dict):
        answer["structuredContent"] = result
    answer["isError"] = False
    return answer

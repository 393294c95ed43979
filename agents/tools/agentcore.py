"""A silo tenant's own Amazon Bedrock AgentCore Gateway as the server of its tools.

A dedicated (silo) tenant may name an AgentCore Gateway in its resource bindings
(``gateway_id``). Where the tenant's AWS bindings apply (``AGENT_RUNTIME`` is ``agentcore``
or ``http``, not the embedded ``local``: tenants.models.aws_bindings_apply, the rule its
AgentCore Memory and Bedrock knowledge base follow too), that gateway serves the tenant's tools
instead of the portal's built-in handlers: the portal's tools gateway (the one
agent runtimes call, REST and MCP, and the local runtime in-process) becomes an
MCP client of it. Everything the portal decides stays in the portal:

* which tools the agent may see and call: the gateway's ``tools/list`` is filtered
  by the tenant's enablement (AgentTool, tier, availability; a gateway tool counts
  only under a registry key of the same name), and a call is checked before it is
  forwarded — fail closed: a tool not enabled is never offered nor called;
* the guardrail screening of every result (services._screened), as for the
  portal's own handlers.

Why the portal forwards rather than the runtime calling the gateway itself: the
runtime sees the tenant only through its headers and token and never reads the
portal's database (architecture §5.3), so it could neither check enablement at
call time nor screen results without another round trip to the portal; and the
tenant's binding and the AWS credentials are the portal's, as on the rest of the
AWS path: the tenant's assumed role (tenants.aws), or without one the boto3 default
credential chain of the worker and web processes, in the tenant's region.

The wire: MCP revision 2025-06-18 over Streamable HTTP, one JSON-RPC message per
POST to ``AGENTCORE_GATEWAY_URL`` (``https://<gateway_id>.gateway.bedrock-agentcore.
<region>.amazonaws.com/mcp`` by default), ``initialize`` then
``notifications/initialized`` then the request, with the ``Mcp-Session-Id`` the
gateway gives, if any, and the negotiated ``MCP-Protocol-Version``. Each request is
signed with botocore's SigV4Auth for service ``bedrock-agentcore`` (a gateway with IAM
inbound authorization), so SigV4 owns ``Authorization``; the tenant context headers
(the same as a runtime gets) and the user's act-on-behalf token
(``X-Act-On-Behalf-Token``) travel beside it, inside the signature, for the gateway's
targets to see who acts for whom (allow-list them on a target:
metadataConfiguration.allowedRequestHeaders). That token is not the one the
runtime sent the portal but a further exchange of it (downstream_token): audience
AGENTCORE_GATEWAY_TOKEN_AUDIENCE, scope tools:invoke alone, the agent's ``act``
nesting the earlier one — a target cannot replay it against the portal.

What is kept between calls, per process (a tool call costs one request, not three):

* the MCP session — what ``initialize`` negotiated (session id, protocol revision) — per
  gateway URL, tenant and signing identity (tenants.aws.client_key), for SESSION_TTL_SECONDS.
  Only the session is shared: the tenant context and the act-on-behalf token of *this*
  call's user travel on every request. A gateway that gives no ``Mcp-Session-Id`` keeps no
  state of ours to lose; what it negotiated reaches it again on every request in
  ``MCP-Protocol-Version``, which the spec names as the way a server learns the revision
  (transports, "Protocol Version Header"), so it is initialized once per TTL as well.
  Per the spec (transports, "Session Management" 3 and 4) a server that terminated a
  session "MUST respond to requests containing that session ID with HTTP 404 Not Found",
  and the client "MUST start a new session by sending a new InitializeRequest without a
  session ID attached". Such a 404 means the request was refused as a whole, never
  processed, so even a ``tools/call`` (not idempotent) is sent again once, on the new
  session; a second 404 fails the call. A 404 to a request without a session id is just
  an error: there is no session that could have ended.
* the gateway's ``tools/list`` (all pages) under the same key for LISTING_TTL_SECONDS: the
  gateway's listing, never the filtered one, so enablement is still decided on every list
  (fail closed). A new ``gateway_id`` binding is a new URL, so a new key.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from agents.runtime.tools import text_of

log = logging.getLogger(__name__)

SERVICE = "bedrock-agentcore"
PROTOCOL_VERSION = "2025-06-18"
CLIENT_INFO = {"name": "tenant-portal-tools-gateway", "version": "1.0"}
TOKEN_HEADER = "X-Act-On-Behalf-Token"
TOOLS_SCOPE = "tools:invoke"
TIMEOUT_SECONDS = 10.0
MAX_RESPONSE_BYTES = 1024 * 1024
MAX_LIST_PAGES = 10
SESSION_TTL_SECONDS = 10 * 60
LISTING_TTL_SECONDS = 60

# The spec's session id alphabet (visible ASCII) and revisions as dates: both go back out in headers.
_SESSION_ID = re.compile(r"[\x21-\x7e]{1,1024}")
_REVISION = re.compile(r"\d{4}-\d{2}-\d{2}")

_session = None
_session_lock = threading.Lock()
_ids = itertools.count(1)
_now = time.monotonic  # the clock of the lifetimes below; tests move it by hand

_mcp_sessions: dict[tuple, McpSession] = {}
_opening: dict[tuple, threading.Lock] = {}  # one initialize at a time per key
_listings: dict[tuple, tuple[float, list[dict]]] = {}
_cache_lock = threading.Lock()


class GatewayError(Exception):
    """The gateway could not be reached or refused; ``str()`` is a reason a model or person may read."""


class ToolError(GatewayError):
    """The tool ran on the gateway and reported a failure (``isError``); ``str()`` is its text."""


class SessionEnded(GatewayError):
    """404 to a request naming a session: the gateway ended it and did not process the request."""


@dataclass(frozen=True)
class McpSession:
    """What ``initialize`` negotiated with a gateway, shared by every call under its key."""

    id: str | None  # Mcp-Session-Id; None: the gateway keeps no session
    protocol_version: str
    opened: float  # _now() when initialized


def session_key(tenant, url: str) -> tuple:
    """Whose MCP session and listing a call may use: the gateway, the tenant, and the identity
    that signs (a session never outlives a change of the tenant's role or tags)."""
    from tenants import aws

    return (url, tenant.pk, tenant.region, aws.client_key(tenant))


def forget_sessions() -> None:
    """Drop every kept MCP session and listing (tests; a process that must start afresh)."""
    with _cache_lock:
        _mcp_sessions.clear()
        _opening.clear()
        _listings.clear()


def gateway_id(tenant) -> str:
    """The AgentCore Gateway serving `tenant`'s tools ("" = the portal's own handlers)."""
    from agents.runtime_gateway import runtime_kind

    return tenant.bindings.dedicated_gateway(runtime_kind(tenant))


def gateway_url(tenant, gateway: str) -> str:
    return settings.AGENTCORE_GATEWAY_URL.format(gateway_id=gateway, region=tenant.region)


def _credentials(tenant_session=None):
    """Frozen AWS credentials: those of `tenant_session` (the tenant's assumed role,
    tenants.aws.session_for) when given, else from the default chain (environment, profile,
    instance or task role), as boto3 finds them for the rest of the AWS path; one session
    per process."""
    global _session
    from botocore.exceptions import BotoCoreError

    if tenant_session is not None:
        try:
            # Fail closed: a role that cannot be assumed never falls back to the portal's own.
            return tenant_session.get_credentials().get_frozen_credentials()
        except BotoCoreError as exc:
            raise GatewayError("this organisation's AWS role could not be assumed to sign the request") from exc
    try:
        with _session_lock:
            if _session is None:
                import boto3

                _session = boto3.Session()
            credentials = _session.get_credentials()
    except BotoCoreError as exc:
        log.warning("no AWS credentials for the AgentCore Gateway: %s", exc)
        credentials = None
    if credentials is None:
        raise GatewayError("no AWS credentials are configured to sign requests to the AgentCore Gateway")
    return credentials.get_frozen_credentials()


@dataclass
class GatewayClient:
    """One call's client of a tenant's gateway: this call's headers on the session its key shares."""

    url: str
    region: str
    headers: dict[str, str]
    key: tuple  # session_key: whose session and listing this call uses
    aws_session: Any = None  # the tenant's (tenants.aws.session_for); None: the default chain

    def _send(self, message: dict, session: McpSession | None) -> tuple[dict | None, str | None]:
        """POST `message` (on `session`; None: initialize); the JSON-RPC answer (None for a
        notification) and the Mcp-Session-Id the gateway answered with."""
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        body = json.dumps(message).encode()
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            **self.headers,
        }
        if session is not None:
            headers["MCP-Protocol-Version"] = session.protocol_version
            if session.id:
                headers["Mcp-Session-Id"] = session.id
        signed = AWSRequest(method="POST", url=self.url, data=body, headers=headers)
        SigV4Auth(_credentials(self.aws_session), SERVICE, self.region).add_auth(signed)
        request = urllib.request.Request(  # noqa: S310 (AGENTCORE_GATEWAY_URL is checked to be http(s))
            self.url, data=body, method="POST", headers=dict(signed.headers.items())
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
                raw = response.read(MAX_RESPONSE_BYTES)
                session_id = response.headers.get("Mcp-Session-Id") or None
                kind = response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            reason = f"this organisation's AgentCore Gateway refused the request (HTTP {exc.code})"
            if exc.code == 404 and session is not None and session.id:
                log.info("agentcore gateway %s ended its session", self.url)
                raise SessionEnded(reason) from exc
            log.warning("agentcore gateway %s answered %s", self.url, exc.code)
            raise GatewayError(reason) from exc
        except (urllib.error.URLError, OSError) as exc:
            log.warning("agentcore gateway %s unreachable: %s", self.url, exc)
            raise GatewayError("this organisation's AgentCore Gateway could not be reached") from exc
        if "id" not in message:
            return None, session_id  # a notification: 202, no body
        return _response(raw, kind, message["id"]), session_id

    def _initialize(self) -> McpSession:
        message = {
            "jsonrpc": "2.0",
            "id": next(_ids),
            "method": "initialize",
            "params": {"protocolVersion": PROTOCOL_VERSION, "capabilities": {}, "clientInfo": CLIENT_INFO},
        }
        document, session_id = self._send(message, None)
        version = _result(document, "initialize").get("protocolVersion")
        if not isinstance(version, str) or not _REVISION.fullmatch(version):
            raise GatewayError("the AgentCore Gateway did not negotiate a protocol revision")
        if session_id is not None and not _SESSION_ID.fullmatch(session_id):
            raise GatewayError("the AgentCore Gateway named its session with characters MCP does not allow")
        session = McpSession(id=session_id, protocol_version=version, opened=_now())
        self._send({"jsonrpc": "2.0", "method": "notifications/initialized"}, session)
        return session

    def _session(self, ended: McpSession | None = None) -> McpSession:
        """The session kept under this client's key, opened when there is none, it is older
        than SESSION_TTL_SECONDS, or it is `ended` (the gateway answered 404 on it)."""

        def usable(kept: McpSession | None) -> bool:
            return kept is not None and kept is not ended and _now() - kept.opened < SESSION_TTL_SECONDS

        with _cache_lock:
            kept = _mcp_sessions.get(self.key)
            if usable(kept):
                return kept
            opening = _opening.setdefault(self.key, threading.Lock())
        with opening:  # callers of one key wait for one initialize rather than open a session each
            with _cache_lock:
                kept = _mcp_sessions.get(self.key)
            if usable(kept):
                return kept  # another thread opened it meanwhile
            session = self._initialize()
            with _cache_lock:
                _mcp_sessions[self.key] = session
            return session

    def _request(self, method: str, params: dict) -> dict:
        session = self._session()
        try:
            document, _ = self._send(_message(method, params), session)
        except SessionEnded:
            # Refused unprocessed (module docstring): safe to send once more, even tools/call.
            document, _ = self._send(_message(method, params), self._session(ended=session))
        return _result(document, method)

    def _list_all(self) -> list[dict]:
        tools: list[dict] = []
        cursor = None
        for _ in range(MAX_LIST_PAGES):
            result = self._request("tools/list", {"cursor": cursor} if cursor else {})
            page = result.get("tools")
            if not isinstance(page, list):
                raise GatewayError("the AgentCore Gateway's tools/list has no tools")
            tools.extend(t for t in page if isinstance(t, dict) and isinstance(t.get("name"), str))
            cursor = result.get("nextCursor")
            if not isinstance(cursor, str) or not cursor:
                break
        return tools

    def list_tools(self) -> list[dict]:
        """Every tool the gateway lists (following nextCursor), as MCP tool objects; the
        gateway's whole listing, kept LISTING_TTL_SECONDS under this client's key."""
        asked = _now()
        with _cache_lock:
            kept = _listings.get(self.key)
        if kept is not None and asked - kept[0] < LISTING_TTL_SECONDS:
            return copy.deepcopy(kept[1])
        tools = self._list_all()
        with _cache_lock:
            _listings[self.key] = (asked, tools)
        return copy.deepcopy(tools)  # the caller's to change; the kept one stays the gateway's

    def call_tool(self, name: str, arguments: dict) -> dict:
        """The tools/call result (content, structuredContent, isError)."""
        return self._request("tools/call", {"name": name, "arguments": arguments})


def _message(method: str, params: dict) -> dict:
    return {"jsonrpc": "2.0", "id": next(_ids), "method": method, "params": params}


def _result(document: dict | None, method: str) -> dict:
    """The result of a JSON-RPC answer; GatewayError when it is an error or has none."""
    document = document or {}
    error = document.get("error")
    if isinstance(error, dict):
        raise GatewayError(f"the AgentCore Gateway refused {method}: {str(error.get('message') or '')[:300]}")
    if not isinstance(document.get("result"), dict):
        raise GatewayError("the AgentCore Gateway's answer has no result")
    return document["result"]


def _response(raw: bytes, content_type: str, message_id) -> dict:
    """The JSON-RPC response to `message_id` in a JSON body or an SSE stream (Streamable HTTP allows both)."""
    try:
        if content_type.startswith("text/event-stream"):
            for line in raw.decode().splitlines():
                if line.startswith("data:"):
                    document = json.loads(line[5:].strip() or "null")
                    if isinstance(document, dict) and document.get("id") == message_id:
                        return document
            raise GatewayError("the AgentCore Gateway's stream carried no answer")
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise GatewayError("the AgentCore Gateway's answer is not JSON") from exc
    if not isinstance(document, dict) or document.get("id") != message_id:
        raise GatewayError("the AgentCore Gateway sent no answer to the request")
    return document


def downstream_token(token, identity) -> str:
    """The act-on-behalf token the gateway (and its targets) get: the turn's validated token
    `token`, exchanged once more (RFC 8693, a further hop: `act` nests) for
    AGENTCORE_GATEWAY_TOKEN_AUDIENCE and the scope tools:invoke alone, never past its
    expiry. A target that keeps it learns who acts for whom and can call none of the
    portal's own gateways with it (they accept only the runtime audience)."""
    from tenants.identity import oauth

    if identity is None:
        raise GatewayError("the acting agent has no workload identity")
    try:
        signed, _, _ = oauth.act_on_behalf(
            token, identity, scope=TOOLS_SCOPE, audience=settings.AGENTCORE_GATEWAY_TOKEN_AUDIENCE
        )
    except oauth.OAuthError as exc:
        raise GatewayError(f"the agent may not act for this user on the AgentCore Gateway ({exc.error})") from exc
    return signed


def client(tenant, gateway: str, *, token, identity, session_id: str, user_id) -> GatewayClient:
    """A client of `tenant`'s gateway carrying the tenant context and, for the validated
    act-on-behalf `token` of the call, its downstream token (downstream_token); made per call,
    on the MCP session and listing kept for the tenant (session_key)."""
    from agents.runtime_gateway import tenant_context_headers
    from tenants import aws

    headers = tenant_context_headers(tenant, session_id=session_id, user_id=user_id)
    headers[TOKEN_HEADER] = downstream_token(token, identity)
    url = gateway_url(tenant, gateway)
    return GatewayClient(
        url=url,
        region=tenant.region,
        headers=headers,
        key=session_key(tenant, url),
        aws_session=aws.session_for(tenant),
    )


def result_value(result: dict) -> Any:
    """A tools/call result as the portal's handlers answer: its structured content, else its
    text (JSON when it parses). Raises GatewayError with the tool's text when it failed."""
    text = text_of(result)  # as the runtime's own MCP client reads a result
    if result.get("isError"):
        raise ToolError(text[:500] or "the tool failed on the AgentCore Gateway")
    if "structuredContent" in result:
        return result["structuredContent"]
    try:
        return json.loads(text)
    except ValueError:
        return text

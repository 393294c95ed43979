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
gateway gives, if any. Each request is signed with botocore's SigV4Auth for service
``bedrock-agentcore`` (a gateway with IAM inbound authorization), so SigV4 owns
``Authorization``; the tenant context headers (the same as a runtime gets) and the
user's act-on-behalf token (``X-Act-On-Behalf-Token``) travel beside it, inside the
signature, for the gateway's targets to see who acts for whom (allow-list them on a
target: metadataConfiguration.allowedRequestHeaders). That token is not the one the
runtime sent the portal but a further exchange of it (downstream_token): audience
AGENTCORE_GATEWAY_TOKEN_AUDIENCE, scope tools:invoke alone, the agent's ``act``
nesting the earlier one — a target cannot replay it against the portal.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
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

_session = None
_session_lock = threading.Lock()
_ids = itertools.count(1)


class GatewayError(Exception):
    """The gateway could not be reached or refused; ``str()`` is a reason a model or person may read."""


class ToolError(GatewayError):
    """The tool ran on the gateway and reported a failure (``isError``); ``str()`` is its text."""


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
    """One MCP conversation with a tenant's gateway: initialize once, then requests."""

    url: str
    region: str
    headers: dict[str, str]
    session_id: str | None = None
    initialized: bool = False
    aws_session: Any = None  # the tenant's (tenants.aws.session_for); None: the default chain

    def _send(self, message: dict) -> dict | None:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        body = json.dumps(message).encode()
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            **self.headers,
        }
        if self.initialized:
            headers["MCP-Protocol-Version"] = PROTOCOL_VERSION
        if self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
        signed = AWSRequest(method="POST", url=self.url, data=body, headers=headers)
        SigV4Auth(_credentials(self.aws_session), SERVICE, self.region).add_auth(signed)
        request = urllib.request.Request(  # noqa: S310 (AGENTCORE_GATEWAY_URL is checked to be http(s))
            self.url, data=body, method="POST", headers=dict(signed.headers.items())
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:  # noqa: S310
                raw = response.read(MAX_RESPONSE_BYTES)
                if message.get("method") == "initialize":
                    self.session_id = response.headers.get("Mcp-Session-Id") or None
                kind = response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            log.warning("agentcore gateway %s answered %s", self.url, exc.code)
            raise GatewayError(f"this organisation's AgentCore Gateway refused the request (HTTP {exc.code})") from exc
        except (urllib.error.URLError, OSError) as exc:
            log.warning("agentcore gateway %s unreachable: %s", self.url, exc)
            raise GatewayError("this organisation's AgentCore Gateway could not be reached") from exc
        if "id" not in message:
            return None  # a notification: 202, no body
        return _response(raw, kind, message["id"])

    def _request(self, method: str, params: dict) -> dict:
        message_id = next(_ids)
        document = self._send({"jsonrpc": "2.0", "id": message_id, "method": method, "params": params})
        error = document.get("error")
        if isinstance(error, dict):
            raise GatewayError(f"the AgentCore Gateway refused {method}: {str(error.get('message') or '')[:300]}")
        if not isinstance(document.get("result"), dict):
            raise GatewayError("the AgentCore Gateway's answer has no result")
        return document["result"]

    def initialize(self) -> None:
        if self.initialized:
            return
        result = self._request(
            "initialize", {"protocolVersion": PROTOCOL_VERSION, "capabilities": {}, "clientInfo": CLIENT_INFO}
        )
        if not isinstance(result.get("protocolVersion"), str):
            raise GatewayError("the AgentCore Gateway did not negotiate a protocol revision")
        self.initialized = True
        self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def list_tools(self) -> list[dict]:
        """Every tool the gateway lists (following nextCursor), as MCP tool objects."""
        self.initialize()
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

    def call_tool(self, name: str, arguments: dict) -> dict:
        """The tools/call result (content, structuredContent, isError)."""
        self.initialize()
        return self._request("tools/call", {"name": name, "arguments": arguments})


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
    act-on-behalf `token` of the call, its downstream token (downstream_token)."""
    from agents.runtime_gateway import tenant_context_headers
    from tenants import aws

    headers = tenant_context_headers(tenant, session_id=session_id, user_id=user_id)
    headers[TOKEN_HEADER] = downstream_token(token, identity)
    return GatewayClient(
        url=gateway_url(tenant, gateway), region=tenant.region, headers=headers, aws_session=aws.session_for(tenant)
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

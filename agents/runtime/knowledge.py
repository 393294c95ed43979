"""How the reference agent retrieves knowledge: through the portal's gateway, never its database.

Architecture §5.3: the runtime sees the tenant only through its headers and the
act-on-behalf token, so retrieval is a call to the portal with that very token
(aud ``agent-runtime``, scope ``kb:read``); the portal validates it, takes the
tenant from it and searches that tenant's chunks only.

* :class:`HttpKnowledgeGateway` POSTs to ``<PORTAL_GATEWAY_URL>/api/v1/gateway/knowledge/retrieve``
  (the ``http`` and ``agentcore`` runtimes, which run outside the portal);
* the in-process ``local`` runtime gets a gateway object from the portal
  (``agents.knowledge.gateway.InProcessKnowledgeGateway``) that calls the same
  token validation and service function as the HTTP endpoint, without a loopback
  HTTP request from a Celery worker to the web tier (which may not even run in
  tests and the embedded default).

A gateway failure never fails the turn: the agent answers without passages
and the reason is logged.

Nothing here imports Django.
"""

from __future__ import annotations

import logging
from typing import Protocol

from agents.runtime import gateway_http as http
from agents.runtime.auth import Caller
from agents.runtime.contract import MAX_PASSAGES, ContractError, Passage

logger = logging.getLogger(__name__)

RETRIEVE_PATH = "/api/v1/gateway/knowledge/retrieve"
DEFAULT_K = 5
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
FEATURE = "knowledge_bases"
SCOPE = "kb:read"


class KnowledgeUnavailable(Exception):
    pass


class KnowledgeGateway(Protocol):
    def retrieve(self, caller: Caller, query: str, *, agent_id: str, k: int = DEFAULT_K) -> list[Passage]:
        """Passages for `query`, as the portal ranks them for the caller's tenant. May raise KnowledgeUnavailable."""


def wants_knowledge(caller: Caller) -> bool:
    """Retrieve only when the tenant is entitled and the token allows it (saves a round trip otherwise)."""
    return FEATURE in caller.tenant.entitlements and SCOPE in caller.scopes and bool(caller.token)


def passages_from_document(document) -> list[Passage]:
    if not isinstance(document, dict) or not isinstance(document.get("passages"), list):
        raise KnowledgeUnavailable("the gateway's answer has no passage list")
    try:
        return [Passage.from_dict(item) for item in document["passages"][:MAX_PASSAGES]]
    except ContractError as exc:
        raise KnowledgeUnavailable(f"the gateway sent a bad passage: {exc}") from exc


class HttpKnowledgeGateway:
    def __init__(self, base_url: str, *, timeout: float = 10.0):
        self.url = http.check_url(base_url) + RETRIEVE_PATH
        self.timeout = timeout

    def retrieve(self, caller: Caller, query: str, *, agent_id: str, k: int = DEFAULT_K) -> list[Passage]:
        body = {"query": query[:2000], "k": k, "agent": agent_id, "tenant_id": caller.tenant.tenant_id}
        try:
            document = http.post_json(self.url, caller.token, body, timeout=self.timeout, max_bytes=MAX_RESPONSE_BYTES)
        except http.GatewayHTTPError as exc:
            raise KnowledgeUnavailable(f"the portal refused retrieval ({exc.status})") from exc
        except http.GatewayUnreachable as exc:
            raise KnowledgeUnavailable(f"the portal's knowledge gateway is unreachable: {exc}") from exc
        return passages_from_document(document)

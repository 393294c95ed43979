"""The in-process knowledge gateway of the `local` runtime.

The reference agent in a remote runtime calls the portal's HTTP endpoint
(agents/knowledge/api.py KnowledgeGatewayView) with its act-on-behalf token.
The in-process runtime runs inside the portal's Celery worker, where a loopback
HTTP call would need the web tier to be up (it is not, in tests and in a
worker-only deployment) and would buy nothing: this object hands the same raw
token to the same function, `services.retrieve_for_token`, which validates it
with `tenants.identity.tokens.validate`, checks kb:read and the tenant, and
searches. Only the transport differs.
"""

from __future__ import annotations

from agents.runtime.auth import Caller
from agents.runtime.knowledge import DEFAULT_K, KnowledgeUnavailable, Retrieval, retrieval_from_document


class InProcessKnowledgeGateway:
    def retrieve(self, caller: Caller, query: str, *, agent_id: str, k: int = DEFAULT_K) -> Retrieval:
        from agents.knowledge import services

        try:
            document = services.retrieve_for_token(
                caller.token, query=query, k=k, agent_slug=agent_id, tenant_id=caller.tenant.tenant_id
            )
        except services.GatewayRefused as exc:
            raise KnowledgeUnavailable(f"the portal refused retrieval ({exc.status}: {exc.detail})") from exc
        return retrieval_from_document(document)

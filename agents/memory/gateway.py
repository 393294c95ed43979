"""The in-process memory gateway of the `local` runtime.

Like agents/knowledge/gateway.py: the remote runtime calls the portal's HTTP
endpoints (agents/memory/api.py) with its act-on-behalf token; the in-process
runtime hands the same raw token to the same service functions
(`services.recall_for_token`, `services.remember_for_token`), which validate it,
check the memory scopes, the entitlement and the tenant, and apply the access
policy. Only the transport differs.
"""

from __future__ import annotations

from agents.runtime.auth import Caller
from agents.runtime.memory import DEFAULT_K, MemoryUnavailable, RecalledMemory, memories_from_document


class InProcessMemoryGateway:
    def recall(self, caller: Caller, query: str, *, agent_id: str, k: int = DEFAULT_K) -> list[RecalledMemory]:
        from agents.memory import services

        try:
            memories = services.recall_for_token(
                caller.token, query=query, k=k, agent_slug=agent_id, tenant_id=caller.tenant.tenant_id
            )
        except services.GatewayRefused as exc:
            raise MemoryUnavailable(f"the portal refused recall ({exc.status}: {exc.detail})") from exc
        return memories_from_document({"memories": memories})

    def remember(self, caller: Caller, content: str, *, agent_id: str) -> None:
        from agents.memory import services

        try:
            services.remember_for_token(
                caller.token, content=content, agent_slug=agent_id, tenant_id=caller.tenant.tenant_id
            )
        except services.GatewayRefused as exc:
            raise MemoryUnavailable(f"the portal refused to remember ({exc.status}: {exc.detail})") from exc

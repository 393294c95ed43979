"""The in-process tools gateway of the `local` runtime.

Remote runtimes call `POST /api/v1/gateway/tools/invoke` (agents/tools/api.py)
with their act-on-behalf token; the in-process runtime runs inside the portal's
worker, so this object hands the same raw token to the same function,
`services.invoke_for_token` (token validation, scope, tenant, entitlement,
schema, handler). Only the transport differs.
"""

from __future__ import annotations

from agents.runtime.auth import Caller
from agents.runtime.tools import ToolFailed


class InProcessToolGateway:
    def invoke(self, caller: Caller, name: str, tool_input: dict, *, agent_id: str):
        from agents.tools import services

        try:
            return services.invoke_for_token(
                caller.token,
                tool_key=name,
                tool_input=tool_input,
                agent_slug=agent_id,
                tenant_id=caller.tenant.tenant_id,
            )
        except services.GatewayRefused as exc:
            raise ToolFailed(exc.detail) from exc

"""Memory test data: entitled tenants, an agent identity that may use memory, real tokens.

Tokens are minted by runtime_gateway.mint_act_on_behalf_token (an RFC 8693 exchange
naming the agent), exactly what a runtime receives.
"""

from __future__ import annotations

import json

from agents import runtime_gateway
from agents.memory.models import MemoryRecord
from agents.models import Invocation
from tenants.context import tenant_context
from tenants.identity.scopes import MEMORY_SCOPES
from tests.agents.helpers import make_catalogue, make_turn

RECALL = "/api/v1/gateway/memory/recall"
REMEMBER = "/api/v1/gateway/memory/remember"


def entitle(*tenants, feature: str = "memory") -> None:
    for tenant in tenants:
        tenant.feature_grants = sorted(set(tenant.feature_grants or []) | {feature})
        tenant.save(update_fields=["feature_grants"])


def memory_catalogue(*tenants):
    """make_catalogue(), with the helpdesk's identity allowed the memory scopes."""
    catalogue = make_catalogue(*tenants)
    identity = catalogue.helpdesk.identity
    identity.allowed_scopes = sorted(set(identity.allowed_scopes) | MEMORY_SCOPES)
    identity.save(update_fields=["allowed_scopes"])
    return catalogue


def turn(side, user, catalogue, question="Question?", **extra):
    return make_turn(side.tenant, user, catalogue.helpdesk, question, **extra)[2]


def token_for(side, invocation) -> str:
    with tenant_context(side.tenant):
        invocation = Invocation.objects.select_related("agent__identity", "conversation", "user").get(pk=invocation.pk)
        return runtime_gateway.mint_act_on_behalf_token(side.tenant, invocation)


def post(client, url, token, **body):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return client.post(url, data=json.dumps(body), content_type="application/json", **headers)


def records(side) -> list[MemoryRecord]:
    with tenant_context(side.tenant):
        return list(MemoryRecord.objects.order_by("id"))

"""A runtime outside the portal remembers and recalls through the HTTP gateway.

A live portal (pytest-django's live_server) answers; the runtime side is the real
RuntimeHost + ReferenceAgent with HttpMemoryGateway, verifying the real act-on-behalf
token against the portal's JWKS: no Django inside the agent.
"""

from __future__ import annotations

import pytest
from django.conf import settings
from django.urls import reverse

from agents import runtime_gateway
from agents.models import Invocation
from agents.runtime.agent import ReferenceAgent
from agents.runtime.auth import CallableKeyProvider, TokenVerifier
from agents.runtime.contract import Delta, InvocationContext, InvocationRequest
from agents.runtime.host import RuntimeHost
from agents.runtime.memory import HttpMemoryGateway, MemoryUnavailable
from tenants.context import tenant_context
from tenants.identity import keys
from tests.memory.helpers import entitle, memory_catalogue, records, turn


def prepared(side, catalogue, question):
    running = turn(side, side.member, catalogue, question, status="running")
    with tenant_context(side.tenant):
        invocation = Invocation.objects.select_related("agent__identity", "conversation", "user", "user_message").get(
            pk=running.pk
        )
        token = runtime_gateway.mint_act_on_behalf_token(side.tenant, invocation)
        headers = runtime_gateway.tenant_headers(side.tenant, token, invocation)
        request = runtime_gateway.build_request(invocation)
    return InvocationRequest.from_dict(request), InvocationContext.from_headers(headers)


def run(host, request, context) -> str:
    events = list(host.run(host.prepare(context.to_headers(), request.to_json())))
    return "".join(e.text for e in events if isinstance(e, Delta))


@pytest.mark.django_db(transaction=True)
def test_an_http_runtime_remembers_and_recalls_through_the_portal(world, live_server):
    entitle(world.a.tenant, world.b.tenant)
    catalogue = memory_catalogue(world.a.tenant, world.b.tenant)
    verifier = TokenVerifier(
        CallableKeyProvider(keys.jwks), issuer=settings.TOKEN_ISSUER, audience=settings.EXCHANGE_DEFAULT_AUDIENCE
    )
    host = RuntimeHost(verifier, ReferenceAgent(memory=HttpMemoryGateway(live_server.url)))

    run(host, *prepared(world.a, catalogue, "Remember that my locker is number 42."))
    answer = run(host, *prepared(world.a, catalogue, "Which locker is mine?"))
    stranger = run(host, *prepared(world.b, catalogue, "Which locker is mine?"))

    assert [r.content for r in records(world.a)] == ["my locker is number 42."]
    assert 'From your long-term memory: "my locker is number 42."' in answer
    assert "42" not in stranger and records(world.b) == []


def test_a_refused_or_unreachable_gateway_is_memory_unavailable(world):
    from agents.runtime.auth import Caller
    from agents.runtime.contract import TenantContext

    caller = Caller(
        tenant=TenantContext(tenant_id="1", tier="t", region="r", entitlements=("memory",)),
        subject="user:1",
        actors=("agent:x",),
        scopes=frozenset({"memory:read"}),
        token="not-a-token",
    )
    with pytest.raises(MemoryUnavailable):
        HttpMemoryGateway("http://127.0.0.1:1").recall(caller, "name", agent_id="helpdesk")


def test_the_standalone_runtime_keeps_memory_through_portal_gateway_url():
    from agents.runtime.serve import build_app

    env = {"RUNTIME_JWKS_URL": "http://127.0.0.1:1/.well-known/jwks.json", "RUNTIME_ISSUER": "http://portal.test"}
    assert build_app(env).host.agent.memory is None
    gateway = build_app({**env, "PORTAL_GATEWAY_URL": "https://portal.example.com/"}).host.agent.memory
    assert isinstance(gateway, HttpMemoryGateway) and gateway.base_url == "https://portal.example.com"


def test_the_gateway_is_in_the_openapi_schema_under_gateway(client):
    schema = client.get(reverse("api_schema"), HTTP_ACCEPT="application/json").json()
    for path in ("/api/v1/gateway/memory/recall", "/api/v1/gateway/memory/remember"):
        assert schema["paths"][path]["post"]["tags"] == ["gateway"]

"""The reference agent retrieves through the portal's gateway over HTTP (http/agentcore runtimes).

A live portal (pytest-django's live_server) answers the gateway; the runtime side
is the real RuntimeHost + ReferenceAgent with HttpKnowledgeGateway, verifying the
real act-on-behalf token against the portal's JWKS — no Django inside the agent.
"""

from __future__ import annotations

import pytest
from django.conf import settings

from agents import runtime_gateway
from agents.models import Invocation
from agents.runtime.agent import ReferenceAgent
from agents.runtime.auth import CallableKeyProvider, TokenVerifier
from agents.runtime.contract import Citation, Delta, InvocationContext, InvocationRequest
from agents.runtime.host import RuntimeHost
from agents.runtime.knowledge import HttpKnowledgeGateway, KnowledgeUnavailable
from tenants.context import tenant_context
from tenants.identity import keys
from tests.agents.helpers import make_catalogue, make_turn
from tests.knowledge.helpers import entitle, ingest, make_kb


def prepared_turn(side, catalogue, question: str):
    _, _, turn = make_turn(side.tenant, side.member, catalogue.helpdesk, question)
    with tenant_context(side.tenant):
        invocation = Invocation.objects.select_related("agent__identity", "conversation", "user", "user_message").get(
            pk=turn.pk
        )
        token = runtime_gateway.mint_act_on_behalf_token(side.tenant, invocation)
        headers = runtime_gateway.tenant_headers(side.tenant, token, invocation)
        request = runtime_gateway.build_request(invocation)
    return InvocationRequest.from_dict(request), InvocationContext.from_headers(headers)


def host_with(gateway) -> RuntimeHost:
    verifier = TokenVerifier(
        CallableKeyProvider(keys.jwks), issuer=settings.TOKEN_ISSUER, audience=settings.EXCHANGE_DEFAULT_AUDIENCE
    )
    return RuntimeHost(verifier, ReferenceAgent(knowledge=gateway))


@pytest.fixture
def scene(world):
    entitle(world.a.tenant, world.b.tenant)
    catalogue = make_catalogue(world.a.tenant, world.b.tenant)
    ingest(world.a, make_kb(world.a), "policy.md", "# Refunds\n\nA refund is possible within 30 days of purchase.")
    ingest(world.b, make_kb(world.b), "policy.md", "# Refunds\n\nA refund is possible within 45 days of purchase.")
    return catalogue


@pytest.mark.django_db(transaction=True)
def test_an_http_runtime_retrieves_over_http_and_cites_only_its_tenants_passages(world, scene, live_server):
    host = host_with(HttpKnowledgeGateway(live_server.url))
    for side, own, foreign in ((world.a, "30 days", "45 days"), (world.b, "45 days", "30 days")):
        request, context = prepared_turn(side, scene, "Within how many days is a refund possible?")
        events = list(host.run(host.prepare(context.to_headers(), request.to_json())))
        answer = "".join(e.text for e in events if isinstance(e, Delta))
        citations = [e for e in events if isinstance(e, Citation)]
        assert own in answer and foreign not in answer
        assert citations and citations[0].index == 1
        assert citations[0].source.startswith(f"/t/{side.tenant.slug}/knowledge/passages/")


@pytest.mark.django_db(transaction=True)
def test_the_gateway_refuses_a_token_replayed_for_another_tenant(world, scene, live_server):
    request, context = prepared_turn(world.a, scene, "refund?")
    caller = host_with(None).prepare(context.to_headers(), request.to_json()).caller
    forged = caller.__class__(
        tenant=caller.tenant.__class__(**{**caller.tenant.__dict__, "tenant_id": str(world.b.tenant.pk)}),
        subject=caller.subject,
        actors=caller.actors,
        scopes=caller.scopes,
        claims=caller.claims,
        token=caller.token,
    )
    with pytest.raises(KnowledgeUnavailable, match="403"):
        HttpKnowledgeGateway(live_server.url).retrieve(forged, "refund", agent_id="helpdesk")


class FailingGateway:
    def __init__(self):
        self.calls = 0

    def retrieve(self, caller, query, *, agent_id, k=5):
        self.calls += 1
        raise KnowledgeUnavailable("portal down")


def test_a_gateway_failure_does_not_fail_the_turn(world, scene):
    gateway = FailingGateway()
    host = host_with(gateway)
    request, context = prepared_turn(world.a, scene, "refund?")
    events = list(host.run(host.prepare(context.to_headers(), request.to_json())))
    assert gateway.calls == 1
    assert [e.type for e in events][-2:] == ["usage", "done"]
    assert not any(isinstance(e, Citation) for e in events)


def test_the_agent_does_not_call_the_gateway_for_a_tenant_without_the_feature(world, scene):
    gateway = FailingGateway()
    request, context = prepared_turn(world.a, scene, "refund?")
    world.a.tenant.feature_grants = []
    world.a.tenant.save(update_fields=["feature_grants"])
    headers = {**context.to_headers()}
    headers["X-Amzn-Bedrock-AgentCore-Runtime-Custom-Entitlements"] = "chat"
    host = host_with(gateway)
    list(host.run(host.prepare(headers, request.to_json())))
    assert gateway.calls == 0


def test_the_standalone_runtime_retrieves_through_portal_gateway_url():
    from agents.runtime.serve import ConfigError, build_app

    env = {"RUNTIME_JWKS_URL": "http://127.0.0.1:1/.well-known/jwks.json", "RUNTIME_ISSUER": "http://portal.test"}
    assert build_app(env).host.agent.knowledge is None
    gateway = build_app({**env, "PORTAL_GATEWAY_URL": "https://portal.example.com/"}).host.agent.knowledge
    assert isinstance(gateway, HttpKnowledgeGateway)
    assert gateway.url == "https://portal.example.com/api/v1/gateway/knowledge/retrieve"
    with pytest.raises(ConfigError, match="PORTAL_GATEWAY_URL"):
        build_app({**env, "PORTAL_GATEWAY_URL": "ftp://portal"})

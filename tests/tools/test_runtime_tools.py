"""The reference agent's tool loop, and tools over HTTP (http/agentcore runtimes).

Over HTTP a live portal (pytest-django's live_server) answers the tools gateway; the
runtime side is the real RuntimeHost + ReferenceAgent with HttpToolGateway, verifying
the real act-on-behalf token against the portal's JWKS.
"""

from __future__ import annotations

import pytest
from django.conf import settings

from agents import runtime_gateway
from agents.models import Invocation
from agents.runtime.agent import ReferenceAgent
from agents.runtime.auth import CallableKeyProvider, Caller, TokenVerifier
from agents.runtime.contract import Delta, InvocationContext, InvocationRequest, ModelSpec, ToolCall, ToolSpec, Usage
from agents.runtime.host import RuntimeHost
from agents.runtime.models import ProviderRegistry
from agents.runtime.tools import MAX_TOOL_ROUNDS, HttpToolGateway, ToolFailed
from tenants.context import tenant_context
from tenants.identity import keys
from tests.agents.helpers import make_catalogue, make_turn
from tests.runtime import helpers
from tests.tools.helpers import allow_tools_scope, enable, make_tools


def prepared_turn(side, catalogue, question: str):
    _, _, turn = make_turn(side.tenant, side.member, catalogue.helpdesk, question)
    with tenant_context(side.tenant):
        invocation = Invocation.objects.select_related("agent__identity", "conversation", "user", "user_message").get(
            pk=turn.pk
        )
        tools = runtime_gateway.tool_specs(side.tenant, invocation)
        token = runtime_gateway.mint_act_on_behalf_token(side.tenant, invocation, tools=bool(tools))
        headers = runtime_gateway.tenant_headers(side.tenant, token, invocation)
        request = runtime_gateway.build_request(invocation, tools=tools)
    return InvocationRequest.from_dict(request), InvocationContext.from_headers(headers)


def host_with(gateway) -> RuntimeHost:
    verifier = TokenVerifier(
        CallableKeyProvider(keys.jwks), issuer=settings.TOKEN_ISSUER, audience=settings.EXCHANGE_DEFAULT_AUDIENCE
    )
    return RuntimeHost(verifier, ReferenceAgent(tools=gateway))


@pytest.fixture
def scene(world):
    catalogue = make_catalogue(world.a.tenant, world.b.tenant)
    allow_tools_scope(catalogue.helpdesk)
    tools = make_tools(world.a.tenant.tier)
    enable(world.a, catalogue.helpdesk, tools["calculator"])
    enable(world.b, catalogue.helpdesk, tools["current_time"])
    return catalogue


@pytest.mark.django_db(transaction=True)
def test_an_http_runtime_runs_tools_through_the_portal_over_http(world, scene, live_server):
    host = host_with(HttpToolGateway(live_server.url))
    request, context = prepared_turn(world.a, scene, "What is 2 ** 10 - 24?")
    assert [t.name for t in request.tools] == ["calculator"]
    events = list(host.run(host.prepare(context.to_headers(), request.to_json())))
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert calls == [
        ToolCall(
            "calculator", {"expression": "2 ** 10 - 24"}, "call_1", result={"expression": "2 ** 10 - 24", "value": 1000}
        )
    ]
    assert "2 ** 10 - 24 = 1000" in "".join(e.text for e in events if isinstance(e, Delta))


@pytest.mark.django_db(transaction=True)
def test_over_http_a_refusal_comes_back_as_the_calls_error(world, scene, live_server):
    request, context = prepared_turn(world.a, scene, "What time is it?")
    caller = host_with(None).prepare(context.to_headers(), request.to_json()).caller
    with pytest.raises(ToolFailed, match="not enabled for Helpdesk"):
        HttpToolGateway(live_server.url).invoke(caller, "current_time", {}, agent_id="helpdesk")  # B's, not A's
    with pytest.raises(ToolFailed, match="expression"):
        HttpToolGateway(live_server.url).invoke(caller, "calculator", {"expression": 5}, agent_id="helpdesk")


@pytest.mark.django_db(transaction=True)
def test_over_http_it_speaks_mcp_initializing_once_per_turn(world, scene, live_server, monkeypatch):
    from agents.runtime import gateway_http

    sent = []
    post_json = gateway_http.post_json

    def recording(url, token, body, **kwargs):
        sent.append((url.split("?")[0].removeprefix(live_server.url), body["method"], kwargs["headers"]))
        return post_json(url, token, body, **kwargs)

    monkeypatch.setattr(gateway_http, "post_json", recording)
    gateway = HttpToolGateway(live_server.url)
    request, context = prepared_turn(world.a, scene, "What is 2 + 2?")
    caller = host_with(None).prepare(context.to_headers(), request.to_json()).caller
    assert gateway.invoke(caller, "calculator", {"expression": "1 + 1"}, agent_id="helpdesk")["value"] == 2
    assert gateway.invoke(caller, "calculator", {"expression": "2 + 2"}, agent_id="helpdesk")["value"] == 4
    assert [(path, method) for path, method, _ in sent] == [
        ("/api/v1/gateway/mcp", "initialize"),
        ("/api/v1/gateway/mcp", "notifications/initialized"),
        ("/api/v1/gateway/mcp", "tools/call"),
        ("/api/v1/gateway/mcp", "tools/call"),
    ]
    assert [headers.get("MCP-Protocol-Version") for _, _, headers in sent] == [None, *["2025-06-18"] * 3]


# --- the loop, with a scripted model and a recording gateway ------------------------------------


CALLER = Caller(
    tenant=helpers.tenant(),
    subject="user:17",
    actors=(helpers.AGENT_SUBJECT,),
    scopes=frozenset({"tools:invoke"}),
    token="t",
)
TOOLS = (ToolSpec("calculator", "Arithmetic", {"type": "object", "properties": {"expression": {"type": "string"}}}),)


class AlwaysCalls:
    """A model that calls the calculator every round (and says a word first)."""

    name = "openai"
    cites_passages = False

    def __init__(self):
        self.inputs = []

    def generate(self, model_input, *, stream):
        self.inputs.append(model_input)
        yield Delta("Thinking.")
        yield ToolCall("calculator", {"expression": "1 + 1"})
        yield Usage(10, 2, False, "llama3")


class RecordingGateway:
    def __init__(self, fail: str = ""):
        self.calls = []
        self.fail = fail

    def invoke(self, caller, name, tool_input, *, agent_id):
        self.calls.append((name, tool_input, agent_id))
        if self.fail:
            raise ToolFailed(self.fail)
        return {"value": 2}


def run(model, gateway, caller=CALLER, tools=TOOLS):
    agent = ReferenceAgent(ProviderRegistry({"offline": lambda: model, "openai": lambda: model}), tools=gateway)
    request = helpers.request(model=ModelSpec(provider="openai", model_id="llama3"), passages=(), tools=tools)
    return list(agent.run(request, caller))


def test_the_loop_stops_after_the_round_limit_and_sums_the_usage_of_every_round():
    model, gateway = AlwaysCalls(), RecordingGateway()
    events = run(model, gateway)
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert len(model.inputs) == MAX_TOOL_ROUNDS + 1
    assert len(gateway.calls) == MAX_TOOL_ROUNDS
    assert [c.id for c in calls] == [f"call_{n}" for n in range(1, MAX_TOOL_ROUNDS + 2)]
    assert all(c.result == {"value": 2} for c in calls[:-1])
    assert calls[-1].result is None and "stops after 5 rounds" in calls[-1].error
    # Each round sees every earlier call with its result.
    assert [len(i.tool_results) for i in model.inputs] == list(range(MAX_TOOL_ROUNDS + 1))
    usage = [e for e in events if isinstance(e, Usage)]
    assert usage == [Usage(10 * (MAX_TOOL_ROUNDS + 1), 2 * (MAX_TOOL_ROUNDS + 1), False, "llama3")]
    assert [e.type for e in events][-2:] == ["usage", "done"]


def test_a_refused_call_is_reported_with_its_error_and_given_back_to_the_model():
    model, gateway = AlwaysCalls(), RecordingGateway(fail="The tool calculator is disabled.")
    events = run(model, gateway)
    first = next(e for e in events if isinstance(e, ToolCall))
    assert first.error == "The tool calculator is disabled." and first.result is None
    assert model.inputs[1].tool_results[0].error == "The tool calculator is disabled."


def test_without_the_scope_calls_are_only_reported_not_run():
    model, gateway = AlwaysCalls(), RecordingGateway()
    caller = Caller(tenant=helpers.tenant(), subject="user:17", actors=(helpers.AGENT_SUBJECT,), token="t")
    events = run(model, gateway, caller=caller)
    assert gateway.calls == [] and len(model.inputs) == 1
    assert [e for e in events if isinstance(e, ToolCall)] == [ToolCall("calculator", {"expression": "1 + 1"})]


def test_a_call_of_a_tool_that_was_not_offered_is_not_run():
    class CallsShell(AlwaysCalls):
        def generate(self, model_input, *, stream):
            self.inputs.append(model_input)
            if not model_input.tool_results:
                yield ToolCall("shell", {"cmd": "rm -rf /"}, "x1")
            else:
                yield Delta("Done.")

    model, gateway = CallsShell(), RecordingGateway()
    events = run(model, gateway)
    call = next(e for e in events if isinstance(e, ToolCall))
    assert gateway.calls == [] and "no tool 'shell'" in call.error and call.id == "x1"
    assert "".join(e.text for e in events if isinstance(e, Delta)) == "Done."

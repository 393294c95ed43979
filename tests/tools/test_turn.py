"""A real chat turn with tools: the task offers the agent's tools, mints a token with
tools:invoke, the local runtime's reference agent runs the offline model's tool call
through the in-process gateway, feeds the result back, and the answer, the stored tool
call (with its result) and the usage event all show it."""

from __future__ import annotations

import pytest
from django.utils import timezone

from agents import runtime_gateway
from agents.models import Invocation, Message
from billing.models import UsageEvent
from tenants.context import tenant_context
from tenants.identity import tokens
from tests.agents.helpers import make_catalogue
from tests.billing.usage_helpers import record_usage
from tests.tools.helpers import allow_tools_scope, enable, make_tools


@pytest.fixture
def chat(world, settings, monkeypatch, client, django_capture_on_commit_callbacks):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    monkeypatch.setattr(runtime_gateway, "_local_client", None)
    catalogue = make_catalogue(world.a.tenant, world.b.tenant)
    allow_tools_scope(catalogue.helpdesk)
    tools = make_tools(world.a.tenant.tier)

    def ask(user, text: str, slug: str = "alpha"):
        client.force_login(user)
        response = client.post(f"/t/{slug}/chat/new/", {"agent": catalogue.helpdesk.pk})
        conversation_url = response["Location"]
        with django_capture_on_commit_callbacks(execute=True):
            client.post(conversation_url + "messages/", {"text": text})
        tenant = world.a.tenant if slug == "alpha" else world.b.tenant
        with tenant_context(tenant):
            answer = Message.objects.filter(role=Message.Role.ASSISTANT).latest("created_at")
            invocation = Invocation.objects.get(assistant_message=answer)
            event = UsageEvent.objects.get(invocation_id=invocation.pk)
        return answer, event, client.get(conversation_url).content.decode()

    return {"catalogue": catalogue, "tools": tools, "ask": ask}


def test_a_turn_runs_the_calculator_and_answers_from_its_result(world, chat):
    enable(world.a, chat["catalogue"].helpdesk, chat["tools"]["calculator"])
    answer, event, page = chat["ask"](world.a.member, "What is 12 * (3 + 4)?")
    assert answer.status == "done", answer.error
    assert "12 * (3 + 4) = 84" in answer.content
    assert answer.tool_calls == [
        {
            "name": "calculator",
            "input": {"expression": "12 * (3 + 4)"},
            "id": "call_1",
            "result": {"expression": "12 * (3 + 4)", "value": 84},
        }
    ]
    assert event.tool_calls == 1
    assert event.input_tokens > 0 and event.output_tokens > 0
    # The chat shows the call: its name, its input and its result.
    assert '<code class="tool-call-name">calculator</code>' in page
    assert "<dt>Input</dt><dd><code>{&quot;expression&quot;: &quot;12 * (3 + 4)&quot;}</code></dd>" in page
    assert (
        "<dt>Result</dt><dd><code>{&quot;expression&quot;: &quot;12 * (3 + 4)&quot;, &quot;value&quot;: 84}</code>"
        in page
    )


def test_a_turn_offers_no_tool_the_tenant_did_not_enable(world, chat):
    enable(world.b, chat["catalogue"].helpdesk, chat["tools"]["calculator"])  # B's choice, not A's
    answer, event, _ = chat["ask"](world.a.member, "What is 12 * (3 + 4)?")
    assert answer.status == "done", answer.error
    assert answer.tool_calls == []
    assert "= 84" not in answer.content
    assert event.tool_calls == 0


def test_the_token_carries_tools_invoke_only_when_tools_are_offered(world, chat, monkeypatch):
    minted = []
    mint = runtime_gateway.mint_act_on_behalf_token

    def spy(*args, **kwargs):
        token = mint(*args, **kwargs)
        minted.append(tokens.validate(token, audience="agent-runtime").scopes)
        return token

    monkeypatch.setattr(runtime_gateway, "mint_act_on_behalf_token", spy)
    chat["ask"](world.a.member, "What is 2 + 2?")
    enable(world.a, chat["catalogue"].helpdesk, chat["tools"]["calculator"])
    chat["ask"](world.a.member, "What is 2 + 2?")
    assert "tools:invoke" not in minted[0]
    assert "tools:invoke" in minted[1]


def test_usage_through_a_turn_is_the_askers_tenants_and_needs_an_admin(world, chat):
    enable(world.a, chat["catalogue"].helpdesk, chat["tools"]["usage_this_month"])
    record_usage(world.a.tenant, timezone.now(), input_tokens=1234, output_tokens=0)
    record_usage(world.b.tenant, timezone.now(), input_tokens=777_777, output_tokens=0)
    answer, event, _ = chat["ask"](world.a.admin, "How much have we used this month?")
    assert answer.status == "done", answer.error
    assert answer.tool_calls[0]["result"]["input_tokens"] == 1234
    assert "777" not in answer.content and "1,234 tokens" in answer.content
    assert event.tool_calls == 1
    answer, event, page = chat["ask"](world.a.member, "How much have we used this month?")
    assert "error" in answer.tool_calls[0] and "result" not in answer.tool_calls[0]
    assert "can do no more than you" in answer.content
    assert event.tool_calls == 1
    assert '<dt>Error</dt><dd class="tool-call-error">Only an owner, admin or billing member' in page

"""The tools gateway agent runtimes call with their act-on-behalf token.

The tokens are real: minted by runtime_gateway.mint_act_on_behalf_token (an RFC 8693
exchange naming the agent), exactly what a runtime receives during a turn.
"""

from __future__ import annotations

import json

import pytest
from django.urls import reverse
from django.utils import timezone

from agents import runtime_gateway
from agents.models import Invocation
from agents.tools.models import ToolStatus
from tenants.context import tenant_context
from tenants.identity import oauth, tokens
from tests.agents.helpers import make_catalogue, make_turn
from tests.billing.usage_helpers import record_usage
from tests.tools.helpers import allow_tools_scope, enable, make_tools

URL = "/api/v1/gateway/tools/invoke"


@pytest.fixture
def scene(world):
    catalogue = make_catalogue(world.a.tenant, world.b.tenant)
    allow_tools_scope(catalogue.helpdesk)
    tools = make_tools(world.a.tenant.tier)
    enable(world.a, catalogue.helpdesk, tools["calculator"], tools["usage_this_month"])
    enable(world.b, catalogue.helpdesk, tools["current_time"], tools["usage_this_month"])
    turns = {}
    for side, name in ((world.a, "a"), (world.b, "b")):
        for role in ("member", "admin"):
            _, _, turns[f"{name}_{role}"] = make_turn(side.tenant, side.user(role), catalogue.helpdesk, "Q?")
    return {"catalogue": catalogue, "tools": tools, "turns": turns}


def token_for(side, invocation, *, tools=True) -> str:
    with tenant_context(side.tenant):
        invocation = Invocation.objects.select_related("agent__identity", "conversation", "user").get(pk=invocation.pk)
        return runtime_gateway.mint_act_on_behalf_token(side.tenant, invocation, tools=tools)


def invoke(client, token, tool="calculator", tool_input=None, **body):
    body = {"tool": tool, "input": {"expression": "6 * 7"} if tool_input is None else tool_input, **body}
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return client.post(URL, data=json.dumps(body), content_type="application/json", **headers)


def assert_problem(response, status: int, *, detail: str = ""):
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["type"] and body["title"]
    assert detail in body["detail"]
    return body


def test_it_runs_an_enabled_tool_for_the_tokens_tenant(client, world, scene):
    response = invoke(client, token_for(world.a, scene["turns"]["a_member"]), agent="helpdesk")
    assert response.status_code == 200
    assert response.json() == {"result": {"expression": "6 * 7", "value": 42}}


def test_it_refuses_a_token_for_another_tenant_than_the_runtime_names(client, world, scene):
    # As the knowledge and memory gateways: a runtime serving tenant B's turn that sends
    # tenant A's token (confused, or handed the wrong one) runs nothing of A's.
    token = token_for(world.a, scene["turns"]["a_admin"])
    assert_problem(
        invoke(client, token, "usage_this_month", {}, agent="helpdesk", tenant_id=str(world.b.tenant.pk)),
        403,
        detail="not issued for this tenant",
    )
    response = invoke(client, token, agent="helpdesk", tenant_id=str(world.a.tenant.pk))
    assert response.json() == {"result": {"expression": "6 * 7", "value": 42}}


def test_in_process_it_refuses_a_token_for_another_tenant_than_the_runtimes_headers(world, scene):
    from agents.runtime.auth import Caller
    from agents.runtime.contract import TenantContext
    from agents.runtime.tools import ToolFailed
    from agents.tools.gateway import InProcessToolGateway

    token = token_for(world.a, scene["turns"]["a_admin"])
    caller = Caller(tenant=TenantContext(tenant_id=str(world.b.tenant.pk)), subject="", actors=(), token=token)
    with pytest.raises(ToolFailed, match="not issued for this tenant"):
        InProcessToolGateway().invoke(caller, "usage_this_month", {}, agent_id="helpdesk")


def test_it_requires_a_bearer_token(client, world, scene):
    response = invoke(client, None)
    assert response.status_code == 401
    assert response.json()["status"] == 401


def test_it_refuses_a_token_for_another_audience(client, world, scene):
    user_token = tokens.issue_user_token(world.a.member, world.a.tenant)
    assert_problem(invoke(client, user_token), 401)


def test_it_refuses_a_token_without_the_tools_scope(client, world, scene):
    assert_problem(
        invoke(client, token_for(world.a, scene["turns"]["a_member"], tools=False)), 403, detail="tools:invoke"
    )


def test_it_refuses_an_exchanged_token_narrowed_to_other_scopes(client, world, scene):
    helpdesk = scene["catalogue"].helpdesk
    narrow = oauth.token_exchange(
        client=oauth.AuthenticatedClient(agent=helpdesk.identity),
        subject_token=tokens.issue_user_token(world.a.member, world.a.tenant),
        subject_token_type=oauth.TOKEN_TYPE_ACCESS,
        actor_token=None,
        actor_token_type=None,
        audiences=["agent-runtime"],
        resources=[],
        scope="kb:read",
        requested_token_type=oauth.TOKEN_TYPE_ACCESS,
    )["access_token"]
    assert_problem(invoke(client, narrow), 403, detail="tools:invoke")


def test_a_tool_enabled_only_in_another_tenant_is_refused(client, world, scene):
    # current_time is enabled for the helpdesk in B only: A's token cannot run it.
    response = invoke(client, token_for(world.a, scene["turns"]["a_member"]), tool="current_time", tool_input={})
    assert_problem(response, 403, detail="not enabled")
    response = invoke(client, token_for(world.b, scene["turns"]["b_member"]), tool="current_time", tool_input={})
    assert response.status_code == 200 and response.json()["result"]["timezone"] == "UTC"


def test_a_token_of_one_tenant_reads_only_its_own_usage(client, world, scene):
    for side, tokens_used in ((world.a, 111), (world.b, 999_000)):
        record_usage(side.tenant, timezone.now(), user=side.member, input_tokens=tokens_used, output_tokens=0)
    a = invoke(client, token_for(world.a, scene["turns"]["a_admin"]), tool="usage_this_month", tool_input={})
    b = invoke(client, token_for(world.b, scene["turns"]["b_admin"]), tool="usage_this_month", tool_input={})
    assert a.status_code == 200 and b.status_code == 200, (a.content, b.content)
    assert a.json()["result"]["input_tokens"] == 111
    assert b.json()["result"]["input_tokens"] == 999_000
    assert "999" not in json.dumps(a.json())


def test_usage_is_refused_when_the_user_the_agent_acts_for_is_a_plain_member(client, world, scene):
    response = invoke(client, token_for(world.a, scene["turns"]["a_member"]), tool="usage_this_month", tool_input={})
    assert_problem(response, 403, detail="can do no more than you")


def test_usage_is_refused_once_the_user_the_agent_acts_for_is_demoted_mid_turn(client, world, scene):
    # The token says "admin" (its roles claim was true when it was minted); the membership,
    # read live when the token is validated, says "member" now: the live role decides.
    from tenants.models import Membership

    token = token_for(world.a, scene["turns"]["a_admin"])
    assert invoke(client, token, tool="usage_this_month", tool_input={}).status_code == 200
    with tenant_context(world.a.tenant):
        Membership.objects.filter(user=world.a.user("admin")).update(role="member")
    response = invoke(client, token, tool="usage_this_month", tool_input={})
    assert_problem(response, 403, detail="can do no more than you")


def test_a_tool_the_tier_does_not_allow_is_refused_even_when_enabled(client, world, scene):
    tool = scene["tools"]["calculator"]
    tool.tiers.clear()
    assert_problem(invoke(client, token_for(world.a, scene["turns"]["a_member"])), 403, detail="not part of")


def test_a_disabled_tool_is_refused(client, world, scene):
    tool = scene["tools"]["calculator"]
    tool.status = ToolStatus.DISABLED
    tool.save()
    assert_problem(invoke(client, token_for(world.a, scene["turns"]["a_member"])), 403, detail="disabled")


def test_an_unknown_tool_is_not_found(client, world, scene):
    assert_problem(invoke(client, token_for(world.a, scene["turns"]["a_member"]), tool="rm-rf"), 404)


def test_another_agent_than_the_tokens_actor_is_refused(client, world, scene):
    response = invoke(client, token_for(world.a, scene["turns"]["a_member"]), agent="hidden")
    assert_problem(response, 403, detail="acting agent")


@pytest.mark.parametrize(
    "tool_input, detail",
    [
        ({}, "'expression' is a required property"),
        ({"expression": 42}, "expression"),
        ({"expression": "1+1", "extra": True}, "Additional properties"),
        ({"expression": "x" * 201}, "expression"),
        ({"expression": "__import__('os')"}, "Only numbers"),
        ({"expression": "1/0"}, "Division by zero"),
        ({"expression": "9**9**9"}, "Exponents are limited"),
        ([1, 2], "JSON object"),
        ("6*7", "JSON object"),
    ],
)
def test_bad_input_is_a_400_problem(client, world, scene, tool_input, detail):
    response = invoke(client, token_for(world.a, scene["turns"]["a_member"]), tool_input=tool_input)
    assert_problem(response, 400, detail=detail)


@pytest.mark.parametrize(
    "body",
    [
        "",
        "null",
        "[]",
        '{"tool": ["calculator"], "input": {}}',
        '{"tool": "calculator", "input": null}',
        '{"input": {}}',
        "{not json",
    ],
)
def test_a_malformed_body_is_a_400_problem(client, world, scene, body):
    token = token_for(world.a, scene["turns"]["a_member"])
    response = client.post(URL, data=body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 400
    assert response.json()["status"] == 400


def test_it_is_in_the_openapi_schema_under_the_gateway_tag(client):
    schema = client.get(reverse("api_schema"), HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/api/v1/gateway/tools/invoke"]["post"]
    assert operation["tags"] == ["gateway"]
    assert operation["operationId"] == "tools_gateway_invoke"


def test_a_plan_without_agent_tools_runs_none_and_offers_none(client, world, scene, django_assert_num_queries):
    """The `tools` feature gates the room: revoked for a tenant, its enabled tools are neither
    offered to the model (at no query: decided from the tier in hand) nor run by the gateway."""
    from agents.tools import services as tool_services

    token = token_for(world.a, scene["turns"]["a_member"])  # minted while the plan had tools
    tenant = world.a.tenant
    tenant.feature_revocations = ["tools"]
    tenant.save(update_fields=["feature_revocations"])
    assert_problem(invoke(client, token, agent="helpdesk"), 403, detail="does not include agent tools")
    with tenant_context(tenant):
        invocation = Invocation.objects.select_related("agent__identity").get(pk=scene["turns"]["a_member"].pk)
        with django_assert_num_queries(0):
            assert runtime_gateway.tool_specs(tenant, invocation) == []
        assert list(tool_services.tier_tools(tenant)) == []
    client.force_login(world.a.admin)  # the tenant admin's page lists no tool to enable either
    page = client.get(reverse("tools:home", kwargs={"tenant_slug": tenant.slug}))
    assert page.status_code == 200
    assert b"calculator" not in page.content.lower()

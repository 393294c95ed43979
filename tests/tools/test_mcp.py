"""The tools gateway as an MCP server (revision 2025-06-18, Streamable HTTP, JSON-RPC 2.0).

Two kinds of client: raw JSON-RPC through Django's test client (every corner of the
protocol and the HTTP auth rules), and the official MCP Python SDK (`mcp`) over a
live server, which proves that a conforming client can initialize, list and call.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from tenants.identity import tokens
from tests.tools.test_gateway import scene, token_for  # noqa: F401 (fixture)

URL = "/api/v1/gateway/mcp"


def rpc(client, token, method=None, params=None, *, message_id=1, raw=None, headers=None):
    if raw is None:
        message = {"jsonrpc": "2.0", "method": method}
        if message_id is not None:
            message["id"] = message_id
        if params is not None:
            message["params"] = params
        raw = json.dumps(message)
    extra = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    extra.update(headers or {})
    return client.post(
        URL, data=raw, content_type="application/json", HTTP_ACCEPT="application/json, text/event-stream", **extra
    )


def result_of(response) -> dict:
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["jsonrpc"] == "2.0" and "error" not in body, body
    return body["result"]


def error_of(response, status=200) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["jsonrpc"] == "2.0" and "result" not in body, body
    return body["error"]


@pytest.fixture
def a_token(world, scene):  # noqa: F811
    return token_for(world.a, scene["turns"]["a_member"])


# --- the handshake and the protocol ----------------------------------------------------------


def test_it_initializes_with_its_protocol_revision_and_tools_capability(client, a_token):
    result = result_of(rpc(client, a_token, "initialize", {"protocolVersion": "2025-06-18", "capabilities": {}}))
    assert result["protocolVersion"] == "2025-06-18"
    assert result["capabilities"] == {"tools": {"listChanged": False}}
    assert result["serverInfo"]["name"] and result["serverInfo"]["version"]


def test_it_answers_an_offer_it_does_not_speak_with_its_own_revision(client, a_token):
    result = result_of(rpc(client, a_token, "initialize", {"protocolVersion": "2099-01-01", "capabilities": {}}))
    assert result["protocolVersion"] == "2025-06-18"


def test_it_accepts_notifications_with_202_and_no_body(client, a_token):
    response = rpc(client, a_token, "notifications/initialized", message_id=None)
    assert (response.status_code, response.content) == (202, b"")


def test_it_answers_ping_with_an_empty_result(client, a_token):
    assert result_of(rpc(client, a_token, "ping", message_id="p-1")) == {}
    assert rpc(client, a_token, "ping", message_id="p-1").json()["id"] == "p-1"


def test_it_answers_an_unknown_method_with_32601(client, a_token):
    assert error_of(rpc(client, a_token, "resources/list"))["code"] == -32601


@pytest.mark.parametrize(
    "method, params",
    [
        ("initialize", {}),
        ("tools/call", {"arguments": {}}),
        ("tools/call", {"name": "calculator", "arguments": "6*7"}),
        ("tools/call", {"name": "no_such_tool", "arguments": {}}),
        ("tools/list", {"cursor": 5}),
    ],
)
def test_it_answers_bad_params_with_32602(client, a_token, method, params):
    assert error_of(rpc(client, a_token, method, params))["code"] == -32602


def test_it_answers_a_body_that_is_not_json_with_a_parse_error(client, a_token):
    error = error_of(rpc(client, a_token, raw="{not json"), status=400)
    assert error["code"] == -32700


def test_it_refuses_a_batch_as_its_revision_removed_them(client, a_token):
    batch = json.dumps([{"jsonrpc": "2.0", "id": 1, "method": "ping"}, {"jsonrpc": "2.0", "id": 2, "method": "ping"}])
    assert error_of(rpc(client, a_token, raw=batch), status=400)["code"] == -32600


@pytest.mark.parametrize(
    "raw", ['{"id": 1, "method": "ping"}', '"ping"', '{"jsonrpc": "2.0", "id": null, "method": "ping"}']
)
def test_it_refuses_an_invalid_request_with_32600(client, a_token, raw):
    assert error_of(rpc(client, a_token, raw=raw), status=400)["code"] == -32600


def test_it_refuses_a_protocol_version_header_it_does_not_speak(client, a_token):
    response = rpc(client, a_token, "ping", headers={"HTTP_MCP_PROTOCOL_VERSION": "1999-01-01"})
    assert response.status_code == 400
    assert rpc(client, a_token, "ping", headers={"HTTP_MCP_PROTOCOL_VERSION": "2025-06-18"}).status_code == 200


def test_get_is_405(client, a_token):
    response = client.get(URL, HTTP_AUTHORIZATION=f"Bearer {a_token}", HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 405


# --- authentication, before any JSON-RPC -----------------------------------------------------


def test_it_answers_401_with_www_authenticate_without_a_token_even_to_garbage(client, scene):  # noqa: F811
    for raw in (json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}), "{not json"):
        response = rpc(client, None, raw=raw)
        assert response.status_code == 401
        assert response["WWW-Authenticate"].startswith("Bearer")
        assert response["Content-Type"].startswith("application/problem+json")
        assert response.json()["status"] == 401


def test_it_answers_401_to_a_user_token(client, world, scene):  # noqa: F811
    user_token = tokens.issue_user_token(world.a.member, world.a.tenant)
    response = rpc(client, user_token, "ping")
    assert response.status_code == 401 and "WWW-Authenticate" in response


def test_it_answers_403_to_a_token_without_the_tools_scope(client, world, scene):  # noqa: F811
    token = token_for(world.a, scene["turns"]["a_member"], tools=False)
    response = rpc(client, token, "tools/list", {})
    assert response.status_code == 403
    assert "tools:invoke" in response.json()["detail"]


def test_it_answers_403_to_a_token_for_another_tenant_than_the_runtime_names(client, world, scene):  # noqa: F811
    token = token_for(world.a, scene["turns"]["a_member"])
    message = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}})

    def listed(tenant) -> object:
        return client.post(
            f"{URL}?tenant_id={tenant.pk}",
            data=message,
            content_type="application/json",
            HTTP_ACCEPT="application/json, text/event-stream",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )

    refused = listed(world.b.tenant)
    assert refused.status_code == 403
    assert "not issued for this tenant" in refused.json()["detail"]
    assert sorted(t["name"] for t in result_of(listed(world.a.tenant))["tools"]) == ["calculator", "usage_this_month"]


# --- tools ------------------------------------------------------------------------------------


def test_it_lists_exactly_the_tools_enabled_for_the_acting_agent(client, world, scene):  # noqa: F811
    a = result_of(rpc(client, token_for(world.a, scene["turns"]["a_member"]), "tools/list", {}))
    b = result_of(rpc(client, token_for(world.b, scene["turns"]["b_member"]), "tools/list"))
    assert sorted(t["name"] for t in a["tools"]) == ["calculator", "usage_this_month"]
    assert sorted(t["name"] for t in b["tools"]) == ["current_time", "usage_this_month"]
    calculator = next(t for t in a["tools"] if t["name"] == "calculator")
    assert calculator["description"] and calculator["inputSchema"]["type"] == "object"


def test_it_calls_a_tool_with_text_and_structured_content(client, a_token):
    params = {"name": "calculator", "arguments": {"expression": "6 * 7"}}
    result = result_of(rpc(client, a_token, "tools/call", params))
    assert result["isError"] is False
    assert result["structuredContent"] == {"expression": "6 * 7", "value": 42}
    assert json.loads(result["content"][0]["text"]) == {"expression": "6 * 7", "value": 42}
    assert result["content"][0]["type"] == "text"


@pytest.mark.parametrize(
    "params, reason",
    [
        ({"name": "calculator", "arguments": {"expression": 5}}, "expression"),
        ({"name": "current_time", "arguments": {}}, "not enabled for Helpdesk"),
        ({"name": "calculator", "arguments": {"expression": "1/0"}}, "Division by zero"),
    ],
)
def test_a_refused_or_failed_call_is_an_error_result_with_the_reason(client, a_token, params, reason):
    result = result_of(rpc(client, a_token, "tools/call", params))
    assert result["isError"] is True
    assert reason in result["content"][0]["text"]
    assert "structuredContent" not in result


def test_another_tenants_token_reaches_only_its_own_tools(client, world, scene):  # noqa: F811
    b_token = token_for(world.b, scene["turns"]["b_member"])
    result = result_of(rpc(client, b_token, "tools/call", {"name": "calculator", "arguments": {"expression": "1"}}))
    assert result["isError"] is True and "not enabled" in result["content"][0]["text"]


# --- the official MCP Python SDK as the client, over a live server -----------------------------


def sdk_session(url: str, token: str, work):
    """Run `work(client)` inside an SDK client session (initialize handshake, revision 2025-06-18)."""
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    async def main():
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30) as http:
            transport = streamable_http_client(url, http_client=http)
            async with Client(transport, mode="legacy", cache=None) as client:
                return await work(client)

    return asyncio.run(main())


@pytest.mark.django_db(transaction=True)
def test_the_sdk_initializes_lists_and_calls(world, scene, live_server):  # noqa: F811
    token = token_for(world.a, scene["turns"]["a_member"])

    async def work(client):
        listed = await client.list_tools()
        ok = await client.call_tool("calculator", {"expression": "2 ** 10"})
        bad_input = await client.call_tool("calculator", {"expression": 5})
        not_enabled = await client.call_tool("current_time", {})
        return client.session.protocol_version, listed, ok, bad_input, not_enabled

    version, listed, ok, bad_input, not_enabled = sdk_session(live_server.url + URL, token, work)
    assert version == "2025-06-18"
    assert sorted(tool.name for tool in listed.tools) == ["calculator", "usage_this_month"]
    assert (ok.is_error, ok.structured_content) == (False, {"expression": "2 ** 10", "value": 1024})
    assert bad_input.is_error is True and "expression" in bad_input.content[0].text
    assert not_enabled.is_error is True and "not enabled for Helpdesk" in not_enabled.content[0].text


@pytest.mark.django_db(transaction=True)
def test_the_sdk_with_another_tenants_token_gets_nothing_of_this_tenant(world, scene, live_server):  # noqa: F811
    token = token_for(world.b, scene["turns"]["b_member"])

    async def work(client):
        return await client.list_tools(), await client.call_tool("calculator", {"expression": "1"})

    listed, called = sdk_session(live_server.url + URL, token, work)
    assert "calculator" not in {tool.name for tool in listed.tools}  # A's tool: B never sees it
    assert called.is_error is True


def test_it_is_in_the_openapi_schema_under_the_gateway_tag(client):
    from django.urls import reverse

    schema = client.get(reverse("api_schema"), HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/api/v1/gateway/mcp"]["post"]
    assert operation["tags"] == ["gateway"]
    assert {"200", "202", "400", "401", "403"} <= set(operation["responses"])
    assert "get" not in schema["paths"]["/api/v1/gateway/mcp"]

"""A tool round with real providers: the model asks for a tool, the agent runs it through the
gateway, and the next model call carries the call and its result in the provider's own
shape (Bedrock Converse: toolUse + toolResult blocks, checked by Stubber against the service
model; OpenAI-compatible: assistant tool_calls + role "tool" messages, sent to a loopback
fake server). The gateway here stands in for the portal (tests/tools covers the real one)."""

from __future__ import annotations

import copy
import itertools
import json

from botocore.stub import Stubber

from agents.runtime.agent import ReferenceAgent
from agents.runtime.auth import Caller
from agents.runtime.contract import Delta, ModelSpec, ToolCall, ToolSpec, Usage
from agents.runtime.models import ProviderRegistry
from agents.runtime.models.base import render_system_prompt
from agents.runtime.models.bedrock import BedrockModel
from agents.runtime.tools import ToolFailed
from tests.runtime import helpers
from tests.runtime.test_openai_provider import chunk

CALLER = Caller(
    tenant=helpers.tenant(),
    subject="user:17",
    actors=(helpers.AGENT_SUBJECT,),
    scopes=frozenset({"agents:invoke", "tools:invoke"}),
    token="token-of-the-turn",
)
SCHEMA = {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}
CALCULATOR = ToolSpec(name="calculator", description="Arithmetic", input_schema=SCHEMA)
MODEL_ID = "us.anthropic.claude-3-5-haiku-20241022-v1:0"


class PortalGateway:
    """Answers like the portal's calculator; refuses a zero divisor like it does."""

    def __init__(self):
        self.calls = []

    def invoke(self, caller, name, tool_input, *, agent_id):
        self.calls.append((caller.token, name, tool_input, agent_id))
        if "/ 0" in tool_input["expression"]:
            raise ToolFailed("Division by zero.")
        return {"expression": tool_input["expression"], "value": 84}


def _request(provider: str, model_id: str, **overrides):
    model = ModelSpec(provider=provider, model_id=model_id, max_tokens=400, temperature=0.2)
    return helpers.request(model=model, prompt="What is 12 * (3 + 4)?", passages=(), tools=(CALCULATOR,), **overrides)


# --- Bedrock ---------------------------------------------------------------------------------


def _converse_params(messages) -> dict:
    return {
        "modelId": MODEL_ID,
        "system": [{"text": render_system_prompt(helpers.request().agent.instructions, ())}],
        "messages": messages,
        "inferenceConfig": {"maxTokens": 400, "temperature": 0.2},
        "toolConfig": {
            "tools": [
                {"toolSpec": {"name": "calculator", "description": "Arithmetic", "inputSchema": {"json": SCHEMA}}}
            ]
        },
        "requestMetadata": {
            "tenant_id": helpers.TENANT_ID,
            "tier": "standard",
            "invocation_id": helpers.request().invocation_id,
            "agent_id": "42",
        },
    }


def _converse_response(content, stop: str, tokens: tuple[int, int]) -> dict:
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": {"inputTokens": tokens[0], "outputTokens": tokens[1], "totalTokens": sum(tokens)},
        "metrics": {"latencyMs": 100},
    }


def test_bedrock_gets_the_tool_result_in_the_next_converse_call():
    client = helpers.boto3_client("bedrock-runtime")
    prompt = [{"role": "user", "content": [{"text": "What is 12 * (3 + 4)?"}]}]
    tool_use = {"toolUseId": "tooluse_1", "name": "calculator", "input": {"expression": "12 * (3 + 4)"}}
    after_tool = prompt + [
        # The model's own words of the round go back with its toolUse, as it said them.
        {"role": "assistant", "content": [{"text": "Let me compute."}, {"toolUse": tool_use}]},
        {
            "role": "user",
            "content": [
                {
                    "toolResult": {
                        "toolUseId": "tooluse_1",
                        "content": [{"json": {"expression": "12 * (3 + 4)", "value": 84}}],
                    }
                }
            ],
        },
    ]
    gateway = PortalGateway()
    model = BedrockModel(client)
    agent = ReferenceAgent(ProviderRegistry({"offline": lambda: model, "bedrock": lambda: model}), tools=gateway)
    with Stubber(client) as stub:
        stub.add_response(
            "converse",
            _converse_response([{"text": "Let me compute."}, {"toolUse": tool_use}], "tool_use", (300, 20)),
            _converse_params(prompt),
        )
        stub.add_response(
            "converse", _converse_response([{"text": "It is 84."}], "end_turn", (350, 5)), _converse_params(after_tool)
        )
        events = list(agent.run(_request("bedrock", MODEL_ID, stream=False), CALLER))
        stub.assert_no_pending_responses()
    assert gateway.calls == [("token-of-the-turn", "calculator", {"expression": "12 * (3 + 4)"}, "42")]
    assert [e for e in events if isinstance(e, ToolCall)] == [
        ToolCall(
            "calculator",
            {"expression": "12 * (3 + 4)"},
            "tooluse_1",
            result={"expression": "12 * (3 + 4)", "value": 84},
        )
    ]
    assert "".join(e.text for e in events if isinstance(e, Delta)) == "Let me compute.\n\nIt is 84."
    assert [e for e in events if isinstance(e, Usage)] == [Usage(650, 25, False, MODEL_ID)]


def test_bedrock_gets_a_refused_call_as_an_error_tool_result():
    client = helpers.boto3_client("bedrock-runtime")
    prompt = [{"role": "user", "content": [{"text": "What is 12 * (3 + 4)?"}]}]
    tool_use = {"toolUseId": "tooluse_9", "name": "calculator", "input": {"expression": "1 / 0"}}
    refused = {
        "toolResult": {
            "toolUseId": "tooluse_9",
            "content": [{"json": {"error": "Division by zero."}}],
            "status": "error",
        }
    }
    after_tool = prompt + [
        {"role": "assistant", "content": [{"toolUse": tool_use}]},
        {"role": "user", "content": [refused]},
    ]
    model = BedrockModel(client)
    agent = ReferenceAgent(
        ProviderRegistry({"offline": lambda: model, "bedrock": lambda: model}), tools=PortalGateway()
    )
    with Stubber(client) as stub:
        stub.add_response(
            "converse", _converse_response([{"toolUse": tool_use}], "tool_use", (10, 2)), _converse_params(prompt)
        )
        stub.add_response(
            "converse",
            _converse_response([{"text": "That divides by zero."}], "end_turn", (12, 4)),
            _converse_params(after_tool),
        )
        events = list(agent.run(_request("bedrock", MODEL_ID, stream=False), CALLER))
        stub.assert_no_pending_responses()
    [call] = [e for e in events if isinstance(e, ToolCall)]
    assert call.error == "Division by zero." and call.result is None


# --- OpenAI-compatible ------------------------------------------------------------------------


def test_openai_gets_the_assistant_tool_calls_and_a_tool_message():
    rounds = itertools.count()

    def script(_request):
        if next(rounds) == 0:
            chunks = [
                chunk(
                    {
                        "tool_calls": [
                            {"index": 0, "id": "call_x", "type": "function", "function": {"name": "calculator"}}
                        ]
                    }
                ),
                chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"expression": "12 * (3 + 4)"}'}}]}),
                chunk({}, finish="tool_calls"),
                chunk(usage={"prompt_tokens": 100, "completion_tokens": 10}),
            ]
        else:
            chunks = [
                chunk({"content": "It is 84."}, finish="stop"),
                chunk(usage={"prompt_tokens": 130, "completion_tokens": 4}),
            ]
        return 200, {"Content-Type": "text/event-stream"}, [*chunks, b"data: [DONE]\n\n"]

    gateway = PortalGateway()
    with helpers.LoopbackServer(script) as server:
        env = {"OPENAI_BASE_URL": f"{server.url}/v1", "OPENAI_API_KEY": "sk-test", "OPENAI_TIMEOUT_SECONDS": "5"}
        agent = ReferenceAgent(ProviderRegistry.from_env(env), tools=gateway)
        events = list(agent.run(_request("openai", "llama3.1:8b"), CALLER))
    first, second = (r.json() for r in server.requests)
    assert first["messages"][-1] == {"role": "user", "content": "What is 12 * (3 + 4)?"}
    assert second["messages"][: len(first["messages"])] == first["messages"]
    assert second["messages"][len(first["messages"]) :] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_x",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": '{"expression": "12 * (3 + 4)"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_x", "content": json.dumps({"expression": "12 * (3 + 4)", "value": 84})},
    ]
    assert second["tools"] == copy.deepcopy(first["tools"])
    assert gateway.calls == [("token-of-the-turn", "calculator", {"expression": "12 * (3 + 4)"}, "42")]
    assert "".join(e.text for e in events if isinstance(e, Delta)) == "It is 84."
    assert [e for e in events if isinstance(e, Usage)] == [Usage(230, 14, False, "llama3.1:8b-served")]

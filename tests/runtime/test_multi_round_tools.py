"""A turn with several tool rounds: every earlier round goes back to the model, in order.

Bedrock Converse wants each round as an assistant message (its text and toolUse blocks)
followed by a user message with the toolResult blocks that answer exactly those ids;
OpenAI-compatible servers want each round as an assistant message with ``tool_calls``
followed by one ``role: "tool"`` message per call id. A turn of three model calls (two tool
rounds, one of them with two calls in parallel) must send round one, then rounds one and
two, never the calls of all rounds folded into one pair.
"""

from __future__ import annotations

import itertools
import json

from botocore.stub import Stubber

from agents.runtime.agent import ReferenceAgent
from agents.runtime.contract import Delta, ToolCall, Usage
from agents.runtime.models import ProviderRegistry
from agents.runtime.models.bedrock import BedrockModel
from tests.runtime import helpers
from tests.runtime.test_openai_provider import chunk
from tests.runtime.test_provider_tool_rounds import (
    CALLER,
    MODEL_ID,
    _converse_params,
    _converse_response,
    _request,
)


class EchoGateway:
    """Answers each calculator call with its expression and a value, so results are told apart."""

    values = {"2 + 2": 4, "3 * 3": 9, "4 + 9": 13}

    def __init__(self):
        self.calls = []

    def invoke(self, caller, name, tool_input, *, agent_id):
        self.calls.append(tool_input["expression"])
        return {"expression": tool_input["expression"], "value": self.values[tool_input["expression"]]}


PROMPT = [{"role": "user", "content": [{"text": "What is 12 * (3 + 4)?"}]}]


def _use(tool_id: str, expression: str) -> dict:
    return {"toolUse": {"toolUseId": tool_id, "name": "calculator", "input": {"expression": expression}}}


def _result(tool_id: str, expression: str, value: int) -> dict:
    return {"toolResult": {"toolUseId": tool_id, "content": [{"json": {"expression": expression, "value": value}}]}}


# Round one: two calls in parallel (one assistant message, both results in ONE user message).
ROUND_ONE = [
    {"role": "assistant", "content": [{"text": "Two sums first."}, _use("tu_a", "2 + 2"), _use("tu_b", "3 * 3")]},
    {"role": "user", "content": [_result("tu_a", "2 + 2", 4), _result("tu_b", "3 * 3", 9)]},
]
# Round two: one call that uses the first round's answers.
ROUND_TWO = [
    {"role": "assistant", "content": [_use("tu_c", "4 + 9")]},
    {"role": "user", "content": [_result("tu_c", "4 + 9", 13)]},
]


def _bedrock_agent(client, gateway) -> ReferenceAgent:
    model = BedrockModel(client)
    return ReferenceAgent(ProviderRegistry({"offline": lambda: model, "bedrock": lambda: model}), tools=gateway)


def test_it_sends_every_earlier_round_to_converse_in_order():
    client = helpers.boto3_client("bedrock-runtime")
    gateway = EchoGateway()
    with Stubber(client) as stub:
        stub.add_response(
            "converse",
            _converse_response(ROUND_ONE[0]["content"], "tool_use", (100, 10)),
            _converse_params(PROMPT),
        )
        stub.add_response(
            "converse",
            _converse_response(ROUND_TWO[0]["content"], "tool_use", (150, 10)),
            _converse_params(PROMPT + ROUND_ONE),
        )
        stub.add_response(
            "converse",
            _converse_response([{"text": "It is 13."}], "end_turn", (200, 5)),
            _converse_params(PROMPT + ROUND_ONE + ROUND_TWO),
        )
        events = list(_bedrock_agent(client, gateway).run(_request("bedrock", MODEL_ID, stream=False), CALLER))
        stub.assert_no_pending_responses()
    assert gateway.calls == ["2 + 2", "3 * 3", "4 + 9"]
    assert [(e.id, e.result["value"]) for e in events if isinstance(e, ToolCall)] == [
        ("tu_a", 4),
        ("tu_b", 9),
        ("tu_c", 13),
    ]
    assert [e for e in events if isinstance(e, Usage)] == [Usage(450, 25, False, MODEL_ID)]


def _stream_events(content: list[dict], stop: str) -> list[dict]:
    """A Converse response's content as ConverseStream events (what map_stream reads)."""
    events: list[dict] = [{"messageStart": {"role": "assistant"}}]
    for index, block in enumerate(content):
        if "text" in block:
            events.append({"contentBlockDelta": {"contentBlockIndex": index, "delta": {"text": block["text"]}}})
        else:
            use = block["toolUse"]
            start = {"toolUse": {"toolUseId": use["toolUseId"], "name": use["name"]}}
            events.append({"contentBlockStart": {"contentBlockIndex": index, "start": start}})
            delta = {"toolUse": {"input": json.dumps(use["input"])}}
            events.append({"contentBlockDelta": {"contentBlockIndex": index, "delta": delta}})
        events.append({"contentBlockStop": {"contentBlockIndex": index}})
    events.append({"messageStop": {"stopReason": stop}})
    return events


def test_it_sends_every_earlier_round_to_converse_stream_in_order():
    client = helpers.boto3_client("bedrock-runtime")
    gateway = EchoGateway()
    streams = iter(
        [
            _stream_events(ROUND_ONE[0]["content"], "tool_use"),
            _stream_events(ROUND_TWO[0]["content"], "tool_use"),
            _stream_events([{"text": "It is 13."}], "end_turn"),
        ]
    )

    def events_of_the_round(parsed, **_):
        # Stubber validates the request against the service model but cannot carry an event
        # stream in its response; the round's events are put in after the stubbed call.
        parsed["stream"] = next(streams)

    client.meta.events.register("after-call.bedrock-runtime.ConverseStream", events_of_the_round)
    with Stubber(client) as stub:
        stub.add_response("converse_stream", {"stream": {}}, _converse_params(PROMPT))
        stub.add_response("converse_stream", {"stream": {}}, _converse_params(PROMPT + ROUND_ONE))
        stub.add_response("converse_stream", {"stream": {}}, _converse_params(PROMPT + ROUND_ONE + ROUND_TWO))
        events = list(_bedrock_agent(client, gateway).run(_request("bedrock", MODEL_ID, stream=True), CALLER))
        stub.assert_no_pending_responses()
    assert gateway.calls == ["2 + 2", "3 * 3", "4 + 9"]
    assert "".join(e.text for e in events if isinstance(e, Delta)) == "Two sums first.\n\nIt is 13."


def _openai_round(calls: list[tuple[str, str]], text: str = "") -> list[bytes]:
    chunks = [chunk({"content": text})] if text else []
    for index, (call_id, expression) in enumerate(calls):
        head = {"index": index, "id": call_id, "type": "function", "function": {"name": "calculator"}}
        chunks.append(chunk({"tool_calls": [head]}))
        arguments = json.dumps({"expression": expression})
        chunks.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}))
    return [*chunks, chunk({}, finish="tool_calls"), chunk(usage={"prompt_tokens": 10, "completion_tokens": 2})]


def _assistant(calls: list[tuple[str, str]], text: str | None = None) -> dict:
    return {
        "role": "assistant",
        "content": text,
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": "calculator", "arguments": json.dumps({"expression": expression})},
            }
            for call_id, expression in calls
        ],
    }


def _tool(call_id: str, expression: str, value: int) -> dict:
    return {"role": "tool", "tool_call_id": call_id, "content": json.dumps({"expression": expression, "value": value})}


def test_it_sends_every_earlier_round_to_an_openai_server_in_order():
    responses = itertools.chain(
        [
            _openai_round([("call_a", "2 + 2"), ("call_b", "3 * 3")], text="Two sums first."),
            _openai_round([("call_c", "4 + 9")]),
        ],
        itertools.repeat([chunk({"content": "It is 13."}, finish="stop")]),
    )

    def script(_request):
        return 200, {"Content-Type": "text/event-stream"}, [*next(responses), b"data: [DONE]\n\n"]

    gateway = EchoGateway()
    with helpers.LoopbackServer(script) as server:
        env = {"OPENAI_BASE_URL": f"{server.url}/v1", "OPENAI_API_KEY": "sk-test", "OPENAI_TIMEOUT_SECONDS": "5"}
        agent = ReferenceAgent(ProviderRegistry.from_env(env), tools=gateway)
        events = list(agent.run(_request("openai", "llama3.1:8b"), CALLER))
    first, second, third = (r.json()["messages"] for r in server.requests)
    round_one = [
        _assistant([("call_a", "2 + 2"), ("call_b", "3 * 3")], text="Two sums first."),
        _tool("call_a", "2 + 2", 4),
        _tool("call_b", "3 * 3", 9),
    ]
    round_two = [_assistant([("call_c", "4 + 9")]), _tool("call_c", "4 + 9", 13)]
    assert first[-1] == {"role": "user", "content": "What is 12 * (3 + 4)?"}
    assert second == first + round_one
    assert third == first + round_one + round_two
    assert gateway.calls == ["2 + 2", "3 * 3", "4 + 9"]
    assert "".join(e.text for e in events if isinstance(e, Delta)) == "Two sums first.\n\nIt is 13."

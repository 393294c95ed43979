"""The openai provider against a fake OpenAI-compatible streaming server on 127.0.0.1."""

from __future__ import annotations

import json

import pytest

from agents.runtime.agent import ReferenceAgent
from agents.runtime.auth import Caller
from agents.runtime.contract import Citation, Delta, Done, Error, ModelSpec, ToolCall, ToolSpec, Usage
from agents.runtime.models import ProviderRegistry
from agents.runtime.models.openai import OpenAIChatModel
from tests.runtime import helpers

CALLER = Caller(tenant=helpers.tenant(), subject="user:17", actors=(helpers.AGENT_SUBJECT,))


def chunk(delta: dict | None = None, *, usage: dict | None = None, finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "llama3.1:8b-served",
        "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    if usage is not None:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n".encode()


def sse(*chunks: bytes):
    return lambda _: (200, {"Content-Type": "text/event-stream"}, [*chunks, b"data: [DONE]\n\n"])


def _run(server, **request_overrides) -> list:
    env = {"OPENAI_BASE_URL": f"{server.url}/v1", "OPENAI_API_KEY": "sk-test", "OPENAI_TIMEOUT_SECONDS": "5"}
    agent = ReferenceAgent(ProviderRegistry.from_env(env))
    model = ModelSpec(provider="openai", model_id="llama3.1:8b", max_tokens=300, temperature=0.3)
    return list(agent.run(helpers.request(model=model, **request_overrides), CALLER))


def test_it_streams_content_deltas_and_reads_the_final_usage():
    script = sse(
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Open Settings "}),
        chunk({"content": "and choose Security [1]."}, finish="stop"),
        chunk(usage={"prompt_tokens": 321, "completion_tokens": 12, "total_tokens": 333}),
    )
    with helpers.LoopbackServer(script) as server:
        events = _run(server)
    assert events == [
        Delta("Open Settings "),
        Delta("and choose Security [1]."),
        Citation(passage_id="kb-1", title="Resetting a password", source="kb://handbook/passwords", index=1),
        Usage(input_tokens=321, output_tokens=12, estimated=False, model="llama3.1:8b-served"),
        Done(),
    ]


def test_it_sends_a_streaming_chat_completions_request():
    with helpers.LoopbackServer(sse(chunk({"content": "ok"}))) as server:
        _run(server, tools=(ToolSpec(name="lookup_invoice", description="Find an invoice"),))
    sent = server.requests[0]
    body = sent.json()
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.headers["Authorization"] == "Bearer sk-test"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert (body["model"], body["max_tokens"], body["temperature"]) == ("llama3.1:8b", 300, 0.3)
    assert body["messages"][0]["role"] == "system"
    assert "[1] Resetting a password" in body["messages"][0]["content"]
    assert body["messages"][-1] == {"role": "user", "content": "How do I reset my password?"}
    assert body["tools"][0]["function"]["name"] == "lookup_invoice"
    assert body["user"] == f"tenant:{helpers.TENANT_ID}"


def test_it_assembles_tool_calls_from_their_deltas():
    script = sse(
        chunk(
            {"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "lookup_invoice"}}]}
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"month": '}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_b", "function": {"name": "reset_password", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"2026-03"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}, finish="tool_calls"),
        chunk(usage={"prompt_tokens": 50, "completion_tokens": 20}),
    )
    with helpers.LoopbackServer(script) as server:
        events = _run(server)
    calls = [e for e in events if isinstance(e, ToolCall)]
    assert calls == [
        ToolCall(name="lookup_invoice", input={"month": "2026-03"}, id="call_a"),
        ToolCall(name="reset_password", input={}, id="call_b"),
    ]
    assert events[-2] == Usage(50, 20, False, "llama3.1:8b-served")


def test_it_estimates_and_flags_usage_when_the_server_sends_none():
    with helpers.LoopbackServer(sse(chunk({"content": "Sixteen chars!!!"}))) as server:
        events = _run(server)
    usage = next(e for e in events if isinstance(e, Usage))
    assert usage.estimated is True
    assert usage.output_tokens == 4
    assert usage.input_tokens > 0


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [(429, "model_throttled", True), (503, "model_unavailable", True), (400, "model_error", False)],
)
def test_it_maps_http_errors_to_error_events(status, code, retryable):
    reply = helpers.json_response({"error": {"message": "nope", "type": "x"}}, status)
    with helpers.LoopbackServer(lambda _: reply) as server:
        events = _run(server)
    assert isinstance(events[0], Error)
    assert (events[0].code, events[0].retryable) == (code, retryable)
    assert "nope" in events[0].message
    assert events[-1] == Done()


def test_it_reports_an_error_sent_in_the_middle_of_the_stream():
    script = sse(chunk({"content": "Par"}), b'data: {"error": {"message": "model crashed"}}\n\n')
    with helpers.LoopbackServer(script) as server:
        events = _run(server)
    assert events[0] == Delta("Par")
    assert isinstance(events[1], Error) and "model crashed" in events[1].message


def test_it_reports_an_unreachable_endpoint_as_retryable():
    model = OpenAIChatModel("http://127.0.0.1:9/v1", timeout=1)
    agent = ReferenceAgent(ProviderRegistry({"offline": lambda: model, "openai": lambda: model}))
    events = list(agent.run(helpers.request(model=ModelSpec(provider="openai", model_id="m")), CALLER))
    assert (events[0].code, events[0].retryable) == ("model_unavailable", True)


def test_it_needs_a_model_id():
    with helpers.LoopbackServer(sse()) as server:
        env = {"OPENAI_BASE_URL": f"{server.url}/v1"}
        events = list(
            ReferenceAgent(ProviderRegistry.from_env(env)).run(
                helpers.request(model=ModelSpec(provider="openai")), CALLER
            )
        )
    assert events[0].code == "model_not_configured"
    assert server.requests == []

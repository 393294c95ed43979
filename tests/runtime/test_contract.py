"""The wire format: session ids, tenant headers, requests, events, SSE and the JSON document."""

from __future__ import annotations

import pytest

from agents.runtime import contract
from agents.runtime.contract import (
    ContractError,
    Delta,
    Done,
    InvocationContext,
    InvocationRequest,
    InvocationResult,
    TenantContext,
    Usage,
)
from tests.runtime import helpers


def test_it_derives_a_stable_session_id_of_valid_length_from_a_conversation_id():
    first = contract.session_id_for_conversation(42)
    assert first == contract.session_id_for_conversation(42)
    assert first != contract.session_id_for_conversation(43)
    assert first.startswith("conv-42-")
    assert 33 <= len(first) <= 256


def test_it_keeps_derived_session_ids_bounded_and_header_safe():
    long_id = contract.session_id_for_conversation("x" * 500)
    odd_id = contract.session_id_for_conversation("a b/ü")
    assert 33 <= len(long_id) <= 100
    assert odd_id.startswith("conv-") and " " not in odd_id and odd_id.isascii()


@pytest.mark.parametrize("value", ["short", "x" * 32, "x" * 257, "conv " + "x" * 40, None])
def test_it_refuses_invalid_session_ids(value):
    with pytest.raises(ContractError):
        contract.validate_session_id(value)


def test_it_accepts_session_ids_at_both_length_limits():
    assert contract.validate_session_id("x" * 33) == "x" * 33
    assert contract.validate_session_id("x" * 256) == "x" * 256


def test_it_round_trips_the_tenant_context_through_headers():
    tenant = helpers.tenant()
    headers = tenant.to_headers()
    assert headers[contract.HEADER_TENANT_ID] == helpers.TENANT_ID
    assert headers[contract.HEADER_ENTITLEMENTS] == "agents,knowledge"
    assert headers[contract.HEADER_FEATURE_FLAGS] == "streaming,citations"
    assert headers[contract.HEADER_DEPLOYMENT_MODEL] == "bridge"
    lowered = {name.lower(): value for name, value in headers.items()}
    assert TenantContext.from_headers(lowered) == tenant


def test_it_builds_every_header_the_portal_sends():
    headers = helpers.context("tok.en.value").to_headers()
    assert headers[contract.HEADER_SESSION_ID] == helpers.SESSION_ID
    assert headers[contract.HEADER_USER_ID] == "user-17"
    assert headers["Authorization"] == "Bearer tok.en.value"
    assert {contract.HEADER_TIER, contract.HEADER_REGION} <= set(headers)


def test_it_reads_an_invocation_context_back_from_its_headers():
    context = helpers.context("tok.en.value")
    assert InvocationContext.from_headers(context.to_headers()) == context


def test_it_refuses_header_values_that_could_inject_headers():
    with pytest.raises(ContractError):
        helpers.tenant(tier="basic\r\nX-Evil: 1").to_headers()


def test_it_refuses_an_invocation_context_with_a_short_session_id():
    with pytest.raises(ContractError):
        InvocationContext(tenant=helpers.tenant(), access_token="t", session_id="too-short", user_id="u")


def test_it_round_trips_a_request_through_json():
    request = helpers.request(messages=(contract.ChatMessage("user", "hi"), contract.ChatMessage("assistant", "hello")))
    assert InvocationRequest.from_json(request.to_json()) == request
    body = request.to_dict()
    assert set(body) == {"invocation_id", "prompt", "messages", "agent", "model", "context", "stream"}
    assert body["context"]["passages"][0] == {
        "id": "kb-1",
        "title": "Resetting a password",
        "text": helpers.PASSAGES[0].text,
        "source": "kb://handbook/passwords",
    }


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b.pop("prompt"), "request.prompt"),
        (lambda b: b.update(prompt="   "), "request.prompt"),
        (lambda b: b.update(messages=[{"role": "system", "content": "x"}]), "role"),
        (lambda b: b["model"].update(provider="gpt-nine"), "model.provider"),
        (lambda b: b["model"].update(max_tokens=0), "model.max_tokens"),
        (lambda b: b["model"].update(temperature="hot"), "model.temperature"),
        (lambda b: b.update(stream="yes"), "request.stream"),
        (lambda b: b.update(context={"passages": "nope"}), "context.passages"),
    ],
)
def test_it_refuses_requests_outside_the_contract_with_a_clear_message(mutate, message):
    body = helpers.request().to_dict()
    mutate(body)
    with pytest.raises(ContractError, match=message):
        InvocationRequest.from_dict(body)


def test_it_parses_sse_with_comments_multiline_data_and_a_missing_final_blank_line():
    lines = [
        b": keep-alive\n",
        b'data: {"type":"delta",\n',
        b'data: "text":"Hi"}\n',
        b"\n",
        b"event: ignored\n",
        b'data: {"type":"future_kind"}\n',
        b"\n",
        b'data: {"type":"done"}',
    ]
    assert list(contract.iter_sse_events(lines)) == [Delta(text="Hi"), Done()]


def test_it_encodes_events_as_single_sse_frames():
    frame = contract.encode_sse(Delta(text="line one\nline two"))
    assert frame.endswith(b"\n\n") and frame.count(b"\n") == 2
    assert list(contract.iter_sse_events(frame.splitlines(keepends=True))) == [Delta(text="line one\nline two")]


def test_it_turns_a_json_document_into_the_same_events_as_a_stream():
    events = [
        Delta(text="Hello "),
        Delta(text="world [1]"),
        contract.Citation(passage_id="kb-1", title="T", source="s", index=1),
        contract.ToolCall(name="lookup", input={"q": "x"}, id="t1"),
        Usage(input_tokens=10, output_tokens=3, estimated=False, model="m"),
        Done(),
    ]
    document = InvocationResult.from_events(events).to_document()
    assert document == {
        "output": "Hello world [1]",
        "citations": [{"passage_id": "kb-1", "title": "T", "source": "s", "index": 1}],
        "tool_calls": [{"name": "lookup", "input": {"q": "x"}, "id": "t1"}],
        "usage": {"input_tokens": 10, "output_tokens": 3, "estimated": False},
        "model": "m",
    }
    again = InvocationResult.from_events(InvocationResult.from_document(document).to_events())
    assert again.to_document() == document


def test_it_marks_error_codes_as_retryable_or_not():
    assert contract.Error(code="model_throttled", message="slow down").retryable is True
    assert contract.Error(code="model_error", message="bad").retryable is False
    assert contract.event_from_dict({"type": "error", "code": "x", "message": "y", "retryable": True}).retryable is True

"""The bedrock provider: Converse end to end with Stubber; ConverseStream's request with
Stubber and its event mapping through botocore's real event-stream parser (the
HTTP layer short-circuited in ``before-send``). No call leaves the process."""

from __future__ import annotations

import json

import pytest
from botocore.stub import Stubber

from agents.runtime.agent import ReferenceAgent
from agents.runtime.auth import Caller
from agents.runtime.contract import Citation, Delta, Done, Error, ModelSpec, ToolCall, ToolSpec, Usage
from agents.runtime.models import ProviderRegistry
from agents.runtime.models.base import render_system_prompt
from agents.runtime.models.bedrock import BedrockModel, map_stream, request_metadata
from tests.runtime import helpers

CALLER = Caller(tenant=helpers.tenant(), subject="user:17", actors=(helpers.AGENT_SUBJECT,))
PROFILE_ARN = "arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.anthropic.claude-3-5-sonnet-20240620-v1:0"
TOOL = ToolSpec(name="lookup_invoice", description="Find an invoice", input_schema={"type": "object"})


def _request(**overrides):
    model = ModelSpec(provider="bedrock", model_id=PROFILE_ARN, max_tokens=400, temperature=0.2)
    return helpers.request(model=model, tools=(TOOL,), **overrides)


def _run(client, **overrides) -> list:
    model = BedrockModel(client)
    agent = ReferenceAgent(ProviderRegistry({"offline": lambda: model, "bedrock": lambda: model}))
    return list(agent.run(_request(**overrides), CALLER))


def _params() -> dict:
    """What the service must receive: checked by Stubber against these values and the service model."""
    return {
        "modelId": PROFILE_ARN,
        "system": [{"text": render_system_prompt(helpers.request().agent.instructions, helpers.PASSAGES)}],
        "messages": [{"role": "user", "content": [{"text": "How do I reset my password?"}]}],
        "inferenceConfig": {"maxTokens": 400, "temperature": 0.2},
        "toolConfig": {
            "tools": [
                {
                    "toolSpec": {
                        "name": "lookup_invoice",
                        "description": "Find an invoice",
                        "inputSchema": {"json": {"type": "object"}},
                    }
                }
            ]
        },
        "requestMetadata": {
            "tenant_id": helpers.TENANT_ID,
            "tier": "standard",
            "invocation_id": helpers.request().invocation_id,
            "agent_id": "42",
        },
    }


def test_it_calls_converse_for_a_non_streaming_invocation():
    client = helpers.boto3_client("bedrock-runtime")
    response = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [
                    {"text": "Open Settings, then Security [1]."},
                    {"toolUse": {"toolUseId": "tu-1", "name": "lookup_invoice", "input": {"month": "2026-03"}}},
                ],
            }
        },
        "stopReason": "tool_use",
        "usage": {"inputTokens": 812, "outputTokens": 37, "totalTokens": 849},
        "metrics": {"latencyMs": 420},
    }
    with Stubber(client) as stub:
        stub.add_response("converse", response, _params())
        events = _run(client, stream=False)
        stub.assert_no_pending_responses()
    assert events == [
        Delta("Open Settings, then Security [1]."),
        ToolCall(name="lookup_invoice", input={"month": "2026-03"}, id="tu-1"),
        Citation(passage_id="kb-1", title="Resetting a password", source="kb://handbook/passwords", index=1),
        Usage(input_tokens=812, output_tokens=37, estimated=False, model=PROFILE_ARN),
        Done(),
    ]


def test_it_sends_a_converse_stream_request_the_service_model_accepts():
    client = helpers.boto3_client("bedrock-runtime")
    with Stubber(client) as stub:
        stub.add_response("converse_stream", {"stream": {}}, _params())
        events = _run(client, stream=True)
        stub.assert_no_pending_responses()
    assert events[-1] == Done()
    assert not any(isinstance(e, Error) for e in events)


def test_it_maps_a_real_converse_stream_into_events():
    event = helpers.event_stream_message
    stream = b"".join(
        [
            event("messageStart", {"role": "assistant"}),
            event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Open "}}),
            event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Settings [1]."}}),
            event("contentBlockStop", {"contentBlockIndex": 0}),
            event(
                "contentBlockStart",
                {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "tu-9", "name": "lookup_invoice"}}},
            ),
            event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"month":'}}}),
            event("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": ' "2026-03"}'}}}),
            event("contentBlockStop", {"contentBlockIndex": 1}),
            event("messageStop", {"stopReason": "tool_use"}),
            event("metadata", {"usage": {"inputTokens": 90, "outputTokens": 14, "totalTokens": 104}, "metrics": {}}),
        ]
    )
    client = helpers.boto3_client("bedrock-runtime")
    sent = []

    def network(request, **kwargs):
        sent.append(request)
        return helpers.fake_aws_response(request.url, stream, "application/vnd.amazon.eventstream")

    client.meta.events.register("before-send.bedrock-runtime.ConverseStream", network)
    events = _run(client, stream=True)

    assert events == [
        Delta("Open "),
        Delta("Settings [1]."),
        ToolCall(name="lookup_invoice", input={"month": "2026-03"}, id="tu-9"),
        Citation(passage_id="kb-1", title="Resetting a password", source="kb://handbook/passwords", index=1),
        Usage(input_tokens=90, output_tokens=14, estimated=False, model=PROFILE_ARN),
        Done(),
    ]
    assert sent[0].url.endswith("/converse-stream")
    assert json.loads(sent[0].body)["requestMetadata"]["tenant_id"] == helpers.TENANT_ID
    assert sent[0].headers["Authorization"].startswith(b"AWS4-HMAC-SHA256")


def test_it_reports_an_exception_inside_the_stream_as_a_retryable_error():
    stream = helpers.event_stream_message(
        "contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Par"}}
    ) + helpers.event_stream_message("throttlingException", {"message": "Too many tokens"}, exception=True)
    client = helpers.boto3_client("bedrock-runtime")
    client.meta.events.register(
        "before-send.bedrock-runtime.ConverseStream",
        lambda request, **kw: helpers.fake_aws_response(request.url, stream, "application/vnd.amazon.eventstream"),
    )
    events = _run(client, stream=True)
    assert events[0] == Delta("Par")
    assert (events[1].code, events[1].retryable) == ("model_throttled", True)
    assert "Too many tokens" in events[1].message
    assert events[2] == Done()


@pytest.mark.parametrize(
    ("service_error", "code", "retryable"),
    [
        ("ThrottlingException", "model_throttled", True),
        ("ServiceUnavailableException", "model_unavailable", True),
        ("ModelTimeoutException", "model_timeout", True),
        ("ValidationException", "model_error", False),
        ("AccessDeniedException", "model_error", False),
    ],
)
def test_it_maps_service_errors_to_contract_codes(service_error, code, retryable):
    client = helpers.boto3_client("bedrock-runtime")
    with Stubber(client) as stub:
        stub.add_client_error("converse", service_error, "it went wrong", expected_params=_params())
        events = _run(client, stream=False)
    assert events == [Error(code, f"Bedrock {service_error}: it went wrong", retryable), Done()]


def test_it_still_reports_a_tool_call_when_the_stream_stops_before_its_end():
    events = list(
        map_stream(
            [
                {"contentBlockStart": {"contentBlockIndex": 0, "start": {"toolUse": {"toolUseId": "t", "name": "n"}}}},
                {"contentBlockDelta": {"contentBlockIndex": 0, "delta": {"toolUse": {"input": '{"a": 1}'}}}},
            ],
            "m",
        )
    )
    assert events == [ToolCall(name="n", input={"a": 1}, id="t")]


def test_it_keeps_request_metadata_within_bedrocks_alphabet():
    metadata = request_metadata({"tenant_id": "7", "agent_id": "helpdesk<script>", "invocation_id": "a" * 300})
    assert metadata["agent_id"] == "helpdeskscript"
    assert len(metadata["invocation_id"]) == 256

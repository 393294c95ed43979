"""AgentCoreRuntimeClient: invoke_agent_runtime with Stubber, and proof that the
before-sign hook puts the tenant headers and the token on the signed request
(captured in ``before-send`` with dummy credentials; nothing leaves the process)."""

from __future__ import annotations

import io
import json

import botocore
import pytest
from botocore.config import Config
from botocore.exceptions import ParamValidationError
from botocore.response import StreamingBody
from botocore.stub import Stubber

from agents.runtime.clients import AgentCoreRuntimeClient, RuntimeRejected, TransientRuntimeError
from agents.runtime.contract import Delta, Done, InvocationResult, Usage, encode_sse
from tests.runtime import helpers

ARN = "arn:aws:bedrock-agentcore:eu-west-1:123456789012:runtime/helpdesk_runtime-AbCdEf1234"
SSE_ANSWER = b"".join(encode_sse(e) for e in [Delta("Hello "), Delta("there."), Usage(5, 2, False, "m"), Done()])


def _body(data: bytes) -> StreamingBody:
    return StreamingBody(io.BytesIO(data), len(data))


def _expected(request, *, accept: str) -> dict:
    return {
        "agentRuntimeArn": ARN,
        "qualifier": "DEFAULT",
        "runtimeSessionId": helpers.SESSION_ID,
        "runtimeUserId": "user-17",
        "contentType": "application/json",
        "accept": accept,
        "payload": request.to_json(),
    }


def test_it_invokes_the_runtime_and_streams_its_sse_answer(token):
    boto = helpers.boto3_client("bedrock-agentcore")
    request = helpers.request(stream=True)
    response = {
        "response": _body(SSE_ANSWER),
        "contentType": "text/event-stream",
        "runtimeSessionId": helpers.SESSION_ID,
        "statusCode": 200,
    }
    with Stubber(boto) as stub:
        stub.add_response("invoke_agent_runtime", response, _expected(request, accept="text/event-stream"))
        events = list(AgentCoreRuntimeClient(ARN, client=boto).invoke(request, helpers.context(token)))
        stub.assert_no_pending_responses()
    assert len(helpers.SESSION_ID) >= 33
    assert events == [Delta("Hello "), Delta("there."), Usage(5, 2, False, "m"), Done()]


def test_it_reads_a_json_answer(token):
    boto = helpers.boto3_client("bedrock-agentcore")
    request = helpers.request(stream=False)
    document = json.dumps({"output": "Hi", "citations": [], "tool_calls": [], "usage": {"input_tokens": 1}}).encode()
    response = {"response": _body(document), "contentType": "application/json", "statusCode": 200}
    with Stubber(boto) as stub:
        stub.add_response("invoke_agent_runtime", response, _expected(request, accept="application/json"))
        result = AgentCoreRuntimeClient(ARN, client=boto).invoke_and_collect(request, helpers.context(token))
    assert result.output == "Hi"
    assert result.usage["input_tokens"] == 1


def test_the_service_model_refuses_session_ids_shorter_than_33_characters():
    boto = helpers.boto3_client("bedrock-agentcore")
    with Stubber(boto) as stub:
        stub.add_response("invoke_agent_runtime", {"response": _body(b"{}"), "contentType": "application/json"})
        with pytest.raises(ParamValidationError, match="runtimeSessionId"):
            boto.invoke_agent_runtime(agentRuntimeArn=ARN, runtimeSessionId="x" * 32, payload=b"{}")


@pytest.mark.parametrize(
    ("service_error", "status", "raised"),
    [
        ("ThrottlingException", 429, TransientRuntimeError),
        ("InternalServerException", 500, TransientRuntimeError),
        ("RetryableConflictException", 409, TransientRuntimeError),
        ("AccessDeniedException", 403, RuntimeRejected),
        ("ValidationException", 400, RuntimeRejected),
        ("ResourceNotFoundException", 404, RuntimeRejected),
    ],
)
def test_it_sorts_service_errors_into_transient_and_rejected(token, service_error, status, raised):
    boto = helpers.boto3_client("bedrock-agentcore")
    with Stubber(boto) as stub:
        stub.add_client_error("invoke_agent_runtime", service_error, "nope", http_status_code=status)
        with pytest.raises(raised) as caught:
            AgentCoreRuntimeClient(ARN, client=boto).invoke(helpers.request(), helpers.context(token))
    assert caught.value.code == service_error


def test_it_raises_transient_when_the_stream_ends_before_done(token):
    boto = helpers.boto3_client("bedrock-agentcore")
    response = {"response": _body(encode_sse(Delta("half"))), "contentType": "text/event-stream"}
    with Stubber(boto) as stub:
        stub.add_response("invoke_agent_runtime", response)
        events = AgentCoreRuntimeClient(ARN, client=boto).invoke(helpers.request(), helpers.context(token))
        assert next(events) == Delta("half")
        with pytest.raises(TransientRuntimeError):
            next(events)


def _capture(boto, replies: list[tuple[int, bytes, str]]) -> list:
    """Answer successive InvokeAgentRuntime HTTP requests with `replies`; returns the captured requests."""
    captured = []

    def network(request, **kwargs):
        captured.append(request)
        status, body, content_type = replies[len(captured) - 1]
        return helpers.fake_aws_response(request.url, body, content_type, status)

    boto.meta.events.register("before-send.bedrock-agentcore.InvokeAgentRuntime", network)
    return captured


def _header(request, name: str) -> str:
    value = request.headers[name]
    return value.decode() if isinstance(value, bytes) else value


def test_the_before_sign_hook_adds_the_tenant_headers_inside_the_sigv4_signature(token):
    boto = helpers.boto3_client("bedrock-agentcore")
    captured = _capture(boto, [(200, SSE_ANSWER, "text/event-stream")])
    events = list(AgentCoreRuntimeClient(ARN, client=boto).invoke(helpers.request(), helpers.context(token)))

    sent = captured[0]
    assert _header(sent, "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Tenant-Id") == helpers.TENANT_ID
    assert _header(sent, "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Tier") == "standard"
    assert _header(sent, "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Region") == "eu-west-1"
    assert _header(sent, "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Deployment-Model") == "bridge"
    assert _header(sent, "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Entitlements") == "agents,knowledge"
    assert _header(sent, "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Feature-Flags") == "streaming,citations"
    assert _header(sent, "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id") == helpers.SESSION_ID
    assert _header(sent, "X-Amzn-Bedrock-AgentCore-Runtime-User-Id") == "user-17"
    # SigV4 owns Authorization; the act-on-behalf token rides in the forwarded custom header.
    authorization = _header(sent, "Authorization")
    assert authorization.startswith("AWS4-HMAC-SHA256 Credential=AKIDTESTTESTTESTTEST/")
    assert _header(sent, "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Authorization") == f"Bearer {token}"
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert "x-amzn-bedrock-agentcore-runtime-custom-tenant-id" in signed
    assert "x-amzn-bedrock-agentcore-runtime-custom-authorization" in signed
    assert sent.url.startswith("https://bedrock-agentcore.eu-west-1.amazonaws.com/runtimes/")
    assert "qualifier=DEFAULT" in sent.url
    assert json.loads(sent.body) == helpers.request().to_dict()
    assert InvocationResult.from_events(events).output == "Hello there."


def test_with_jwt_auth_the_token_goes_in_the_authorization_header_unsigned(token):
    boto = helpers.boto3_client("bedrock-agentcore", config=Config(signature_version=botocore.UNSIGNED))
    captured = _capture(boto, [(200, SSE_ANSWER, "text/event-stream")])
    list(AgentCoreRuntimeClient(ARN, client=boto, auth="jwt").invoke(helpers.request(), helpers.context(token)))

    sent = captured[0]
    assert _header(sent, "Authorization") == f"Bearer {token}"
    assert _header(sent, "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Tenant-Id") == helpers.TENANT_ID
    assert "X-Amz-Date" not in sent.headers


def test_a_retried_call_is_signed_again_with_the_headers(token):
    config = Config(retries={"mode": "standard", "max_attempts": 2})
    boto = helpers.boto3_client("bedrock-agentcore", config=config)
    error = json.dumps({"message": "try again"}).encode()
    captured = _capture(boto, [(503, error, "application/json"), (200, SSE_ANSWER, "text/event-stream")])
    events = list(AgentCoreRuntimeClient(ARN, client=boto).invoke(helpers.request(), helpers.context(token)))

    assert len(captured) == 2
    for sent in captured:
        assert _header(sent, "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Tenant-Id") == helpers.TENANT_ID
        assert _header(sent, "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Authorization") == f"Bearer {token}"
        assert _header(sent, "Authorization").startswith("AWS4-HMAC-SHA256")
    assert events[-1] == Done()


def test_calls_without_portal_headers_are_left_alone(token):
    boto = helpers.boto3_client("bedrock-agentcore")
    AgentCoreRuntimeClient(ARN, client=boto)  # registers the hooks
    captured = _capture(boto, [(200, b"{}", "application/json")])
    boto.invoke_agent_runtime(agentRuntimeArn=ARN, runtimeSessionId=helpers.SESSION_ID, payload=b"{}")
    assert "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Tenant-Id" not in captured[0].headers


def test_ping_says_agentcore_checks_health_itself():
    import pytest

    from agents.runtime.clients import AgentCoreRuntimeClient, RuntimeClientError

    client = AgentCoreRuntimeClient(
        "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/x-AbCdEf1234", region_name="us-east-1"
    )
    with pytest.raises(RuntimeClientError, match="no ping"):
        client.ping()

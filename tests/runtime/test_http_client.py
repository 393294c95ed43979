"""HttpRuntimeClient against the real runtime server, and against misbehaving peers."""

from __future__ import annotations

import json
import socket
import time

import pytest

from agents.runtime.clients import HttpRuntimeClient, RuntimeProtocolError, RuntimeRejected, TransientRuntimeError
from agents.runtime.contract import Citation, Delta, Done, InvocationResult, Usage, encode_sse
from tests.runtime import helpers


def test_it_streams_events_from_the_runtime(runtime_url, token):
    events = list(HttpRuntimeClient(runtime_url).invoke(helpers.request(stream=True), helpers.context(token)))
    assert isinstance(events[0], Delta)
    assert [type(e) for e in events[-3:]] == [Citation, Usage, Done]
    assert len([e for e in events if isinstance(e, Delta)]) > 10


def test_it_turns_a_json_answer_into_the_same_events_as_a_stream(runtime_url, token):
    client = HttpRuntimeClient(runtime_url)
    streamed = InvocationResult.from_events(client.invoke(helpers.request(stream=True), helpers.context(token)))
    documented = InvocationResult.from_events(client.invoke(helpers.request(stream=False), helpers.context(token)))
    assert documented == streamed


def test_it_pings_the_runtime(runtime_url):
    assert HttpRuntimeClient(runtime_url).ping()["status"] == "Healthy"


def test_it_raises_rejected_for_a_refused_token(runtime_url, signing_key):
    expired = helpers.mint(signing_key, exp=int(time.time()) - 600)
    with pytest.raises(RuntimeRejected) as caught:
        HttpRuntimeClient(runtime_url).invoke(helpers.request(), helpers.context(expired))
    assert (caught.value.status, caught.value.code) == (401, "invalid_token")


def test_it_raises_rejected_for_another_tenants_headers(runtime_url, token):
    with pytest.raises(RuntimeRejected) as caught:
        HttpRuntimeClient(runtime_url).invoke(helpers.request(), helpers.context(token, helpers.OTHER_TENANT_ID))
    assert caught.value.status == 403


def test_it_raises_transient_when_nothing_listens(token):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: the connection is refused
        client = HttpRuntimeClient(f"http://127.0.0.1:{port}", connect_timeout=1)
        with pytest.raises(TransientRuntimeError):
            client.invoke(helpers.request(), helpers.context(token))


@pytest.mark.parametrize(("status", "retry_after"), [(429, 7.0), (503, None), (500, None)])
def test_it_raises_transient_for_429_and_5xx(token, status, retry_after):
    headers = {"Retry-After": "7"} if retry_after else {}
    reply = helpers.json_response({"error": {"code": "busy", "message": "try later"}}, status, headers)
    with helpers.LoopbackServer(lambda _: reply) as server:
        with pytest.raises(TransientRuntimeError) as caught:
            HttpRuntimeClient(server.url).invoke(helpers.request(), helpers.context(token))
    assert (caught.value.status, caught.value.code, caught.value.retry_after) == (status, "busy", retry_after)


def test_it_raises_transient_when_the_stream_ends_before_done(token):
    def cut_short(_):
        return 200, {"Content-Type": "text/event-stream"}, [encode_sse(Delta("half an ans"))]

    with helpers.LoopbackServer(cut_short) as server:
        events = HttpRuntimeClient(server.url).invoke(helpers.request(), helpers.context(token))
        assert next(events) == Delta("half an ans")
        with pytest.raises(TransientRuntimeError, match="before 'done'"):
            next(events)


def test_it_raises_transient_when_the_runtime_goes_quiet(token):
    def stall(_):
        def chunks():
            yield encode_sse(Delta("thinking"))
            time.sleep(1.0)
            yield encode_sse(Done())

        return 200, {"Content-Type": "text/event-stream"}, chunks()

    with helpers.LoopbackServer(stall) as server:
        events = HttpRuntimeClient(server.url, timeout=0.2).invoke(helpers.request(), helpers.context(token))
        assert next(events) == Delta("thinking")
        with pytest.raises(TransientRuntimeError, match="sent nothing"):
            next(events)


def test_it_raises_protocol_error_for_an_answer_outside_the_contract(token):
    with helpers.LoopbackServer(lambda _: (200, {"Content-Type": "text/html"}, [b"<html>"])) as server:
        with pytest.raises(RuntimeProtocolError):
            HttpRuntimeClient(server.url).invoke(helpers.request(), helpers.context(token))


def test_it_sends_the_contract_headers_and_body(token):
    reply = helpers.json_response({"output": "ok", "usage": {"input_tokens": 1, "output_tokens": 1}, "model": "m"})
    with helpers.LoopbackServer(lambda _: reply) as server:
        events = list(
            HttpRuntimeClient(server.url + "/rt").invoke(helpers.request(stream=False), helpers.context(token))
        )
    sent = server.requests[0]
    assert (sent.method, sent.path) == ("POST", "/rt/invocations")
    assert sent.headers["Authorization"] == f"Bearer {token}"
    assert sent.headers["X-Amzn-Bedrock-AgentCore-Runtime-Custom-Tenant-Id"] == helpers.TENANT_ID
    assert sent.headers["X-Amzn-Bedrock-AgentCore-Runtime-Custom-Entitlements"] == "agents,knowledge"
    assert sent.headers["X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"] == helpers.SESSION_ID
    assert sent.headers["X-Amzn-Bedrock-AgentCore-Runtime-User-Id"] == "user-17"
    assert sent.headers["Accept"] == "application/json"
    assert json.loads(sent.body) == helpers.request(stream=False).to_dict()
    assert events == [Delta("ok"), Usage(1, 1, False, "m"), Done()]

"""The runtime server end to end over real HTTP on 127.0.0.1: JSON, SSE, /ping, refusals."""

from __future__ import annotations

import http.client
import json
import threading
import time
from urllib.parse import urlsplit

import pytest

from agents.runtime.agent import ReferenceAgent
from agents.runtime.contract import SSE_CONTENT_TYPE, Delta, iter_sse_events
from agents.runtime.host import RuntimeHost
from agents.runtime.models import ProviderRegistry
from agents.runtime.server import RuntimeApp
from tests.runtime import helpers


def _call(url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=helpers.WAIT)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response, data


def _invoke(url: str, token: str, *, tenant_id: str = helpers.TENANT_ID, **request_overrides):
    request = helpers.request(**request_overrides)
    headers = {**helpers.context(token, tenant_id).to_headers(), "Content-Type": "application/json"}
    return _call(url, "POST", "/invocations", request.to_json(), headers)


def test_it_answers_a_json_document_when_the_request_does_not_stream(runtime_url, token):
    response, body = _invoke(runtime_url, token, stream=False)
    assert response.status == 200
    assert response.getheader("Content-Type") == "application/json"
    document = json.loads(body)
    assert set(document) == {"output", "citations", "tool_calls", "usage", "model"}
    assert document["output"].startswith("[Offline model]")
    assert document["citations"][0]["passage_id"] == "kb-1"
    assert document["usage"]["estimated"] is True and document["usage"]["output_tokens"] > 0
    assert document["model"] == "offline-extractive-1"


def test_it_streams_server_sent_events_when_asked(runtime_url, token):
    response, body = _invoke(runtime_url, token, stream=True)
    assert response.status == 200
    assert response.getheader("Content-Type").startswith(SSE_CONTENT_TYPE)
    assert response.getheader("Cache-Control") == "no-cache"
    frames = body.split(b"\n\n")
    assert all(frame.startswith(b"data: {") for frame in frames if frame)
    kinds = [event.type for event in iter_sse_events(body.splitlines(keepends=True))]
    assert kinds[0] == "delta" and kinds[-3:] == ["citation", "usage", "done"]


def test_it_refuses_a_call_without_a_token_with_401_and_a_json_error(runtime_url):
    headers = {**helpers.tenant().to_headers(), "Content-Type": "application/json"}
    response, body = _call(runtime_url, "POST", "/invocations", helpers.request().to_json(), headers)
    assert response.status == 401
    assert response.getheader("WWW-Authenticate") == 'Bearer error="missing_token"'
    assert json.loads(body) == {"error": {"code": "missing_token", "message": "A bearer token is required."}}


def test_it_refuses_a_token_for_another_tenant_with_403(runtime_url, token):
    response, body = _invoke(runtime_url, token, tenant_id=helpers.OTHER_TENANT_ID)
    assert response.status == 403
    assert json.loads(body)["error"]["code"] == "forbidden"


def test_it_refuses_a_bad_payload_with_400_but_only_after_the_token(runtime_url, token):
    headers = {**helpers.context(token).to_headers(), "Content-Type": "application/json"}
    bad_json, body = _call(runtime_url, "POST", "/invocations", b"{not json", headers)
    anonymous, _ = _call(runtime_url, "POST", "/invocations", b"{not json", {"Content-Type": "application/json"})
    assert bad_json.status == 400 and json.loads(body)["error"]["code"] == "bad_request"
    assert anonymous.status == 401


def test_it_refuses_a_short_session_id_with_400(runtime_url, token):
    headers = {**helpers.context(token).to_headers(), "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": "short"}
    response, body = _call(runtime_url, "POST", "/invocations", helpers.request().to_json(), headers)
    assert response.status == 400
    assert "session id" in json.loads(body)["error"]["message"]


def test_it_refuses_an_oversized_body_with_413(verifier, token):
    app = RuntimeApp(RuntimeHost(verifier), max_body_bytes=1024)
    with helpers.serve_asgi(app) as url:
        response, _ = _invoke(url, token, prompt="x" * 2048)
    assert response.status == 413


@pytest.mark.parametrize(("method", "path", "status"), [("GET", "/nope", 404), ("GET", "/invocations", 405)])
def test_it_answers_unknown_routes_and_methods_with_json(runtime_url, method, path, status):
    response, body = _call(runtime_url, method, path)
    assert response.status == status
    assert "error" in json.loads(body)


class GatedModel:
    """Sends one word, then waits for `gate` before finishing; records whether it finished or was closed."""

    name = "offline"
    cites_passages = True

    def __init__(self):
        self.gate = threading.Event()
        self.started = threading.Event()
        self.finished = False
        self.closed = False

    def generate(self, model_input, *, stream):
        try:
            yield Delta("first ")
            self.started.set()
            self.gate.wait(helpers.WAIT)
            for word in range(50):
                yield Delta(f"w{word} ")
            self.finished = True
        finally:
            self.closed = True


@pytest.fixture
def gated(verifier):
    model = GatedModel()
    host = RuntimeHost(verifier, ReferenceAgent(ProviderRegistry({"offline": lambda: model})))
    with helpers.serve_asgi(RuntimeApp(host)) as url:
        yield model, host, url
    model.gate.set()


def test_it_pings_healthy_then_busy_while_an_invocation_runs(gated, token):
    from agents.runtime.clients import HttpRuntimeClient

    model, host, url = gated
    idle = json.loads(_call(url, "GET", "/ping")[1])
    assert idle["status"] == "Healthy"
    before = int(time.time())

    events = HttpRuntimeClient(url, timeout=helpers.WAIT).invoke(helpers.request(), helpers.context(token))
    assert next(events) == Delta("first ")
    busy = json.loads(_call(url, "GET", "/ping")[1])
    model.gate.set()
    rest = list(events)
    helpers.wait_until(lambda: host.active == 0)
    after = json.loads(_call(url, "GET", "/ping")[1])

    assert busy["status"] == "HealthyBusy"
    assert busy["time_of_last_update"] >= before
    assert rest[-1].type == "done"
    assert after["status"] == "Healthy"
    assert after["time_of_last_update"] >= busy["time_of_last_update"]


def test_it_stops_the_agent_when_the_caller_disconnects(gated, token):
    model, host, url = gated
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=helpers.WAIT)
    headers = {**helpers.context(token).to_headers(), "Content-Type": "application/json"}
    connection.request("POST", "/invocations", body=helpers.request().to_json(), headers=headers)
    response = connection.getresponse()
    assert response.readline().startswith(b"data: ")
    assert model.started.wait(helpers.WAIT)
    connection.sock.close()
    connection.close()
    time.sleep(0.2)  # let the server notice the disconnect before the model continues
    model.gate.set()

    helpers.wait_until(lambda: model.closed and host.active == 0)
    assert model.finished is False

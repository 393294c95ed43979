"""LocalRuntimeClient: the in-process runtime goes through the same checks as the server."""

from __future__ import annotations

import sys

import pytest

from agents.runtime.clients import HttpRuntimeClient, LocalRuntimeClient, RuntimeRejected, TransientRuntimeError
from agents.runtime.contract import Done, InvocationResult
from tests.runtime import helpers


@pytest.fixture
def local(signing_key) -> LocalRuntimeClient:
    return LocalRuntimeClient.from_jwks(lambda: {"keys": [signing_key.jwk]}, issuer=helpers.ISSUER)


def test_it_answers_in_process_with_the_reference_agent(local, token):
    events = list(local.invoke(helpers.request(), helpers.context(token)))
    result = InvocationResult.from_events(events)
    assert events[-1] == Done()
    assert result.output.startswith("[Offline model]")
    assert result.citations[0]["passage_id"] == "kb-1"


def test_it_gives_the_same_answer_as_the_http_runtime(local, runtime_url, token):
    request, context = helpers.request(), helpers.context(token)
    assert list(local.invoke(request, context)) == list(HttpRuntimeClient(runtime_url).invoke(request, context))


def test_it_verifies_the_token_like_the_server_does(local, signing_key, token):
    with pytest.raises(RuntimeRejected) as wrong_tenant:
        local.invoke(helpers.request(), helpers.context(token, helpers.OTHER_TENANT_ID))
    with pytest.raises(RuntimeRejected) as no_act:
        local.invoke(helpers.request(), helpers.context(helpers.mint(signing_key, act=None)))
    assert wrong_tenant.value.status == 403
    assert no_act.value.status == 403


def test_it_raises_transient_when_the_keys_cannot_be_loaded(token):
    def broken():
        raise ConnectionError("database away")

    local = LocalRuntimeClient.from_jwks(broken, issuer=helpers.ISSUER)
    with pytest.raises(TransientRuntimeError) as caught:
        local.invoke(helpers.request(), helpers.context(token))
    assert caught.value.status == 503


def test_it_reports_busy_while_an_invocation_is_being_read(local, token):
    events = local.invoke(helpers.request(), helpers.context(token))
    assert local.ping()["status"] == "Healthy"
    next(events)
    assert local.ping()["status"] == "HealthyBusy"
    list(events)
    assert local.ping()["status"] == "Healthy"


def test_the_runtime_package_does_not_import_django():
    # The runtime must run as its own process; importing Django would tie it to the portal.
    import subprocess

    code = (
        "import sys; import agents.runtime.serve, agents.runtime.clients, agents.runtime.models.bedrock, "
        "agents.runtime.models.openai; print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert done.stdout.strip() == "[]"

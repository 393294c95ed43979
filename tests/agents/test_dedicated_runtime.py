"""A dedicated (silo) tenant's turns run only on its own runtime, for every runtime kind;
without one they fail closed, never on the shared runtime. The embedded `local` runtime
is one process: dedication does not apply there."""

from __future__ import annotations

import pytest

from agents import runtime_gateway
from agents.models import Invocation, Message, MessageStatus
from agents.runtime import clients
from tenants.context import tenant_context
from tenants.models import DeploymentModel
from tests.billing.helpers import ask, run

SHARED_ARN = "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/shared_pool-XXXXXXXXXX"
OWN_ARN = "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/tenant_a-YYYYYYYYYY"
SHARED_URL = "http://shared-runtime.internal:8080"
OWN_URL = "http://tenant-a-runtime.internal:8080"

pytestmark = pytest.mark.django_db


def silo(tenant, **bindings):
    tenant.deployment_model = DeploymentModel.SILO
    tenant.resource_bindings = bindings
    return tenant


@pytest.fixture
def agentcore(settings):
    settings.AGENT_RUNTIME = "agentcore"
    settings.AGENTCORE_RUNTIME_ARN = SHARED_ARN


@pytest.fixture
def http(settings):
    settings.AGENT_RUNTIME = "http"
    settings.RUNTIME_URL = SHARED_URL


def client(tenant):
    return runtime_gateway.client_for(runtime_gateway.runtime_kind(tenant), tenant)


def test_it_sends_a_silo_tenant_to_its_own_agentcore_runtime(world, agentcore):
    assert client(silo(world.a.tenant, runtime_arn=OWN_ARN)).agent_runtime_arn == OWN_ARN


def test_it_refuses_a_silo_tenant_without_its_own_agentcore_runtime(world, agentcore):
    with pytest.raises(runtime_gateway.RuntimeRejected, match="dedicated runtime is not configured.*runtime ARN"):
        client(silo(world.a.tenant))


def test_it_sends_a_pool_tenant_to_the_shared_agentcore_runtime(world, agentcore):
    assert client(world.b.tenant).agent_runtime_arn == SHARED_ARN


def test_it_sends_a_silo_tenant_to_its_own_http_runtime(world, http):
    assert client(silo(world.a.tenant, runtime_url=OWN_URL)).base_url == OWN_URL


def test_it_refuses_a_silo_tenant_with_only_an_arn_on_the_http_runtime(world, http):
    with pytest.raises(runtime_gateway.RuntimeRejected, match="dedicated runtime is not configured.*runtime URL"):
        client(silo(world.a.tenant, runtime_arn=OWN_ARN))


def test_it_sends_a_pool_tenant_to_the_shared_http_runtime(world, http):
    assert client(world.b.tenant).base_url == SHARED_URL


def test_it_runs_a_silo_tenant_on_the_embedded_local_runtime(world, settings):
    settings.AGENT_RUNTIME = "local"
    assert isinstance(client(silo(world.a.tenant)), clients.LocalRuntimeClient)


@pytest.mark.django_db(transaction=True)
def test_it_fails_a_silo_turn_without_its_runtime_with_a_reason_the_person_sees(world, catalogue, http):
    tenant = silo(world.a.tenant)
    tenant.save()
    invocation = ask(world.a, catalogue.helpdesk)
    assert run(world.a, invocation) == "failed"
    with tenant_context(tenant):
        failed = Invocation.objects.get(pk=invocation.pk)
        answer = Message.objects.get(pk=failed.assistant_message_id)
    assert failed.error.startswith("This organisation's dedicated runtime is not configured")
    assert answer.status == MessageStatus.FAILED

"""Tenant-scoped AWS credentials: every AWS call made for a tenant signs as the tenant's role.

STS is botocore's Stubber (AssumeRole validated against the service model); the calls the
assumed credentials sign are caught in `before-send` (nothing leaves the process) or reach
the fake AgentCore Gateway on loopback, which sees the SigV4 header. The portal's own
credentials are AKIDPORTAL…: a request signed with them instead is the failure these
tests look for.
"""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime, timedelta

import pytest
from botocore.credentials import Credentials
from botocore.stub import Stubber
from django.urls import reverse

from agents import runtime_gateway
from agents.memory import stores
from agents.memory.policy import Namespace
from agents.runtime import clients
from tenants import aws
from tenants.context import all_tenants, tenant_context
from tests import factories
from tests.runtime import helpers
from tests.tools.test_agentcore_gateway import GATEWAY_ID, gateway, header, mcp, scene  # noqa: F401 (fixtures reused)
from tests.tools.test_gateway import token_for

ROLE_A = "arn:aws:iam::123456789012:role/tenants/alpha-agent"
ROLE_B = "arn:aws:iam::123456789012:role/tenants/beta-agent"
PLATFORM_ROLE = "arn:aws:iam::123456789012:role/portal-pooled-tenants"
RUNTIME_A = "arn:aws:bedrock-agentcore:eu-west-1:123456789012:runtime/alpha_runtime-AbCdEf1234"
RUNTIME_B = "arn:aws:bedrock-agentcore:eu-west-1:123456789012:runtime/beta_runtime-AbCdEf1234"
SHARED_RUNTIME = "arn:aws:bedrock-agentcore:eu-west-1:123456789012:runtime/shared_runtime-AbCdEf1234"
MEMORY_A = "alpha_memory-a1B2c3D4e5"
PORTAL_KEY = "AKIDPORTALOWNKEY01"


def signed_by(authorization: str) -> str:
    """The access key id a SigV4 Authorization header names."""
    found = re.match(r"AWS4-HMAC-SHA256 Credential=([A-Z0-9]+)/", authorization)
    assert found, authorization
    return found.group(1)


class FakeSts:
    """The STS client AssumeRole goes to: a Stubber, and the source credentials it was made with."""

    def __init__(self):
        import boto3

        self.client = boto3.client("sts", region_name="eu-west-1", aws_access_key_id="x", aws_secret_access_key="x")
        self.stub = Stubber(self.client)
        self.stub.activate()
        self.made_with: list[tuple[str, str]] = []

    def create(self, region: str, **credentials):
        self.made_with.append((region, credentials["aws_access_key_id"]))
        return self.client

    def expect(self, params: dict, key: str, *, lasting: timedelta = timedelta(seconds=900)):
        self.stub.add_response(
            "assume_role",
            {
                "Credentials": {
                    "AccessKeyId": key,
                    "SecretAccessKey": f"secret-of-{key}",
                    "SessionToken": f"token-of-{key}",
                    "Expiration": datetime.now(UTC) + lasting,
                },
                "AssumedRoleUser": {
                    "AssumedRoleId": f"AROAEXAMPLE:{params['RoleSessionName']}",
                    "Arn": f"arn:aws:sts::123456789012:assumed-role/x/{params['RoleSessionName']}",
                },
            },
            params,
        )


@pytest.fixture
def sts(monkeypatch, settings):
    settings.AGENT_RUNTIME = "agentcore"  # AWS bindings apply (not the embedded local runtime)
    settings.AGENTCORE_RUNTIME_ARN = SHARED_RUNTIME
    settings.AWS_TENANT_ROLE_ARN = ""
    settings.AWS_TENANT_ROLE_SESSION_SECONDS = 900
    fake = FakeSts()
    monkeypatch.setattr(aws, "make_sts_client", fake.create)
    monkeypatch.setattr(aws, "_portal_credentials", lambda: Credentials(PORTAL_KEY, "portal-secret"))
    aws.forget_sessions()
    runtime_gateway._agentcore_clients.clear()
    yield fake
    fake.stub.deactivate()
    aws.forget_sessions()
    runtime_gateway._agentcore_clients.clear()


def silo(tenant, role: str = ROLE_A, **bindings):
    with all_tenants("test: bind the tenant's resources"):
        tenant.deployment_model = "silo"
        tenant.region = "eu-west-1"
        tenant.resource_bindings = {"iam_role_arn": role, **bindings} if role else bindings
        tenant.save(update_fields=["deployment_model", "region", "resource_bindings"])
    return tenant


def expected(tenant, role: str) -> dict:
    return {
        "RoleArn": role,
        "RoleSessionName": f"portal-{tenant.slug}",
        "DurationSeconds": 900,
        "Tags": [
            {"Key": "tenant_id", "Value": str(tenant.pk)},
            {"Key": "tier", "Value": tenant.tier.slug},
            {"Key": "deployment_model", "Value": tenant.deployment_model},
        ],
        "TransitiveTagKeys": ["tenant_id"],
    }


def capture(boto, operation: str, body: bytes, content_type: str = "application/json") -> list:
    """Answer `operation`'s HTTP requests on `boto` in-process; the requests sent, in order."""
    sent = []

    def network(request, **kwargs):
        sent.append(request)
        return helpers.fake_aws_response(request.url, body, content_type)

    boto.meta.events.register(f"before-send.bedrock-agentcore.{operation}", network)
    return sent


RUNTIME_ANSWER = json.dumps({"output": "Hi", "citations": [], "tool_calls": [], "usage": {}}).encode()


def invoke_runtime(tenant):
    client = runtime_gateway.client_for("agentcore", tenant)
    sent = capture(client.client, "InvokeAgentRuntime", RUNTIME_ANSWER)
    result = client.invoke_and_collect(helpers.request(stream=False), helpers.context("a.b.c", str(tenant.pk)))
    return client, sent, result


def test_it_assumes_a_silo_tenants_own_role_with_its_tenant_tags(world, sts):
    tenant = silo(world.a.tenant)
    sts.expect(expected(tenant, ROLE_A), "ASIAALPHAASSUMED01")
    frozen = aws.session_for(tenant).get_credentials().get_frozen_credentials()
    sts.stub.assert_no_pending_responses()
    assert frozen.access_key == "ASIAALPHAASSUMED01"
    assert frozen.token == "token-of-ASIAALPHAASSUMED01"
    # AssumeRole itself goes to the tenant's regional STS, signed with the portal's own credentials.
    assert sts.made_with == [("eu-west-1", PORTAL_KEY)]


def test_the_assumed_credentials_sign_the_tenants_agentcore_runtime_invoke(world, sts):
    tenant = silo(world.a.tenant, runtime_arn=RUNTIME_A)
    sts.expect(expected(tenant, ROLE_A), "ASIAALPHAASSUMED01")
    _, sent, result = invoke_runtime(tenant)
    assert result.output == "Hi"
    assert len(sent) == 1
    assert signed_by(sent[0].headers["Authorization"].decode()) == "ASIAALPHAASSUMED01"
    assert sent[0].headers["X-Amz-Security-Token"].decode() == "token-of-ASIAALPHAASSUMED01"


def test_the_assumed_credentials_sign_the_tenants_agentcore_memory_calls(world, sts):
    tenant = silo(world.a.tenant, memory_id=MEMORY_A)
    sts.expect(expected(tenant, ROLE_A), "ASIAALPHAASSUMED01")
    store = stores.store_for(tenant)
    sent = capture(store.client, "RetrieveMemoryRecords", json.dumps({"memoryRecordSummaries": []}).encode())
    namespace = Namespace(tenant.pk, world.a.member.pk, "helpdesk")
    assert store.recall([namespace], "my dog", 3) == []
    assert [signed_by(r.headers["Authorization"].decode()) for r in sent] == ["ASIAALPHAASSUMED01"]


def test_the_assumed_credentials_sign_the_tenants_agentcore_gateway_requests(client, world, scene, gateway, sts):  # noqa: F811
    tenant = silo(world.a.tenant, gateway_id=GATEWAY_ID)
    sts.expect(expected(tenant, ROLE_A), "ASIAALPHAASSUMED01")
    mcp(client, token_for(world.a, scene["turn"]), "tools/call", {"name": "calculator", "arguments": {}})
    assert gateway.methods() == ["initialize", "notifications/initialized", "tools/call"]
    for request in gateway.requests:
        headers = {k.lower(): v for k, v in request["headers"].items()}
        assert signed_by(headers["authorization"]) == "ASIAALPHAASSUMED01"  # not the portal's AKIDGATEWAYTEST
        assert headers["x-amz-security-token"] == "token-of-ASIAALPHAASSUMED01"


def test_a_gateway_session_is_not_carried_over_to_the_tenants_next_role(client, world, scene, gateway, sts):  # noqa: F811
    tenant = silo(world.a.tenant, gateway_id=GATEWAY_ID)
    sts.expect(expected(tenant, ROLE_A), "ASIAALPHAASSUMED01")
    token = token_for(world.a, scene["turn"])
    mcp(client, token, "tools/call", {"name": "calculator", "arguments": {}})
    tenant = silo(world.a.tenant, ROLE_B, gateway_id=GATEWAY_ID)
    sts.expect(expected(tenant, ROLE_B), "ASIAALPHAROLEB0001")
    mcp(client, token, "tools/call", {"name": "calculator", "arguments": {}})
    # The gateway's session belongs to the identity that opened it: new credentials open their own.
    assert gateway.methods() == ["initialize", "notifications/initialized", "tools/call"] * 2
    assert [header(r, "Mcp-Session-Id") for r in gateway.requests] == [
        None,
        "gw-session-1",
        "gw-session-1",
        None,
        "gw-session-2",
        "gw-session-2",
    ]
    keys = [signed_by(header(r, "Authorization")) for r in gateway.requests]
    assert keys == ["ASIAALPHAASSUMED01"] * 3 + ["ASIAALPHAROLEB0001"] * 3


def test_two_tenants_get_their_own_credentials_and_never_share_a_client(world, sts):
    a = silo(world.a.tenant, ROLE_A, runtime_arn=RUNTIME_A)
    b = silo(world.b.tenant, ROLE_B, runtime_arn=RUNTIME_B)
    sts.expect(expected(a, ROLE_A), "ASIAALPHAASSUMED01")
    sts.expect(expected(b, ROLE_B), "ASIABETAASSUMED001")
    client_a, sent_a, _ = invoke_runtime(a)
    client_b, sent_b, _ = invoke_runtime(b)
    assert client_a is not client_b
    assert signed_by(sent_a[0].headers["Authorization"].decode()) == "ASIAALPHAASSUMED01"
    assert signed_by(sent_b[0].headers["Authorization"].decode()) == "ASIABETAASSUMED001"


def test_two_pool_tenants_on_the_platform_role_never_share_a_client(world, sts, settings):
    settings.AWS_TENANT_ROLE_ARN = PLATFORM_ROLE
    a, b = world.a.tenant, world.b.tenant
    assert runtime_gateway.client_for("agentcore", a) is not runtime_gateway.client_for("agentcore", b)
    assert runtime_gateway.client_for("agentcore", a) is runtime_gateway.client_for("agentcore", a)


def test_a_tenant_moved_to_another_tier_gets_a_runtime_client_signed_with_its_new_tags(world, sts):
    tenant = silo(world.a.tenant, runtime_arn=RUNTIME_A)
    sts.expect(expected(tenant, ROLE_A), "ASIAALPHAASSUMED01")
    before, sent_before, _ = invoke_runtime(tenant)
    with all_tenants("test: move the tenant"):
        tenant.tier = factories.make_tier("premium-plus")
        tenant.save(update_fields=["tier"])
    sts.expect(expected(tenant, ROLE_A), "ASIAALPHAPREMIUM01")
    after, sent_after, _ = invoke_runtime(tenant)
    sts.stub.assert_no_pending_responses()
    assert after is not before
    assert signed_by(sent_before[0].headers["Authorization"].decode()) == "ASIAALPHAASSUMED01"
    assert signed_by(sent_after[0].headers["Authorization"].decode()) == "ASIAALPHAPREMIUM01"


def test_it_reuses_the_credentials_until_they_near_expiry(world, sts):
    tenant = silo(world.a.tenant)
    sts.expect(expected(tenant, ROLE_A), "ASIAALPHAASSUMED01")
    keys = [aws.session_for(tenant).get_credentials().get_frozen_credentials().access_key for _ in range(5)]
    sts.stub.assert_no_pending_responses()  # one AssumeRole for five signatures
    assert keys == ["ASIAALPHAASSUMED01"] * 5


def test_it_refreshes_the_credentials_once_they_near_expiry(world, sts):
    tenant = silo(world.a.tenant)
    # 200 s left: inside the last third of a 900 s session (refresh), outside the last sixth.
    sts.expect(expected(tenant, ROLE_A), "ASIAALPHAASSUMED01", lasting=timedelta(seconds=200))
    sts.expect(expected(tenant, ROLE_A), "ASIAALPHAREFRESHED")
    credentials = aws.session_for(tenant).get_credentials()
    keys = [credentials.get_frozen_credentials().access_key for _ in range(4)]
    sts.stub.assert_no_pending_responses()
    assert keys == ["ASIAALPHAASSUMED01"] + ["ASIAALPHAREFRESHED"] * 3


def test_access_denied_sends_nothing_and_fails_the_turn_with_a_reason(world, sts, caplog):
    tenant = silo(world.a.tenant, runtime_arn=RUNTIME_A)
    sts.stub.add_client_error("assume_role", "AccessDenied", "not authorized to perform sts:TagSession", 403)
    client = runtime_gateway.client_for("agentcore", tenant)
    sent = capture(client.client, "InvokeAgentRuntime", RUNTIME_ANSWER)
    with caplog.at_level(logging.ERROR, logger="tenants.aws"):
        with pytest.raises(clients.RuntimeClientError) as refused:
            client.invoke(helpers.request(stream=False), helpers.context("a.b.c", str(tenant.pk)))
    assert sent == []  # neither with the role nor with the portal's own credentials
    assert isinstance(refused.value.__cause__, aws.TenantCredentialsError)
    assert ROLE_A in caplog.text and "AccessDenied" in caplog.text
    message = runtime_gateway.rejection_reason(refused.value)
    assert "AWS role" in message and "operator" in message


def test_access_denied_leaves_the_memory_store_unavailable_with_a_reason(world, sts):
    tenant = silo(world.a.tenant, memory_id=MEMORY_A)
    sts.stub.add_client_error("assume_role", "AccessDenied", "nope", 403)
    store = stores.store_for(tenant)
    sent = capture(store.client, "RetrieveMemoryRecords", b"{}")
    with pytest.raises(stores.StoreUnavailable) as unavailable:
        store.recall([Namespace(tenant.pk, world.a.member.pk, "helpdesk")], "dog", 3)
    assert sent == []
    assert "AWS role" in unavailable.value.reason
    assert unavailable.value.transient is False


def test_no_source_credentials_fail_closed_too(world, sts, monkeypatch):
    tenant = silo(world.a.tenant, runtime_arn=RUNTIME_A)
    monkeypatch.setattr(aws, "_portal_credentials", lambda: None)
    client = runtime_gateway.client_for("agentcore", tenant)
    sent = capture(client.client, "InvokeAgentRuntime", RUNTIME_ANSWER)
    with pytest.raises(clients.RuntimeClientError):
        client.invoke(helpers.request(stream=False), helpers.context("a.b.c", str(tenant.pk)))
    assert sent == [] and sts.made_with == []


def test_a_pool_tenant_assumes_the_platform_role_tagged_with_its_tenant_id(world, sts, settings):
    settings.AWS_TENANT_ROLE_ARN = PLATFORM_ROLE
    tenant = world.b.tenant
    assert tenant.deployment_model == "pool"
    sts.expect(expected(tenant, PLATFORM_ROLE), "ASIAPOOLASSUMED001")
    _, sent, _ = invoke_runtime(tenant)
    sts.stub.assert_no_pending_responses()
    assert signed_by(sent[0].headers["Authorization"].decode()) == "ASIAPOOLASSUMED001"


def test_a_silo_tenant_without_its_own_role_assumes_the_platform_role(world, sts, settings):
    settings.AWS_TENANT_ROLE_ARN = PLATFORM_ROLE
    tenant = silo(world.a.tenant, role="")
    assert aws.role_for(tenant) == PLATFORM_ROLE


def test_without_a_platform_role_a_pool_tenant_uses_the_portals_own_credentials(world, sts, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", PORTAL_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "portal-secret")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    tenant = world.b.tenant
    assert aws.session_for(tenant) is None
    _, sent, _ = invoke_runtime(tenant)
    assert signed_by(sent[0].headers["Authorization"].decode()) == PORTAL_KEY
    assert sts.made_with == []


def test_on_embedded_defaults_no_sts_client_is_made(world, sts, settings, monkeypatch):
    settings.AGENT_RUNTIME = "local"
    settings.AWS_TENANT_ROLE_ARN = PLATFORM_ROLE
    monkeypatch.setattr(aws, "make_sts_client", lambda *a, **kw: pytest.fail("an STS client was made"))
    tenant = silo(world.a.tenant, memory_id=MEMORY_A)
    assert aws.role_for(tenant) == "" and aws.session_for(tenant) is None
    assert isinstance(stores.store_for(tenant), stores.LocalStore)
    with tenant_context(tenant):
        assert aws.session_for(world.b.tenant) is None


def test_access_denied_keeps_the_gateway_request_unsent(client, world, scene, gateway, sts):  # noqa: F811
    tenant = silo(world.a.tenant, gateway_id=GATEWAY_ID)
    sts.stub.add_client_error("assume_role", "AccessDenied", "nope", 403)
    answer = mcp(client, token_for(world.a, scene["turn"]), "tools/call", {"name": "calculator", "arguments": {}})
    assert gateway.requests == []  # never signed with the portal's own AKIDGATEWAYTEST instead
    assert "AWS role could not be assumed" in json.dumps(answer)
    assert tenant.bindings.iam_role_arn == ROLE_A


def test_the_assumed_credentials_sign_the_tenants_bedrock_knowledge_retrieve(world, sts):
    from agents.knowledge import bedrock

    tenant = silo(world.a.tenant, knowledge_base_id="SILOKB0001")
    sts.expect(expected(tenant, ROLE_A), "ASIAALPHAASSUMED01")
    sent = []

    def network(request, **kwargs):
        sent.append(request)
        return helpers.fake_aws_response(request.url, b'{"retrievalResults": []}', "application/json")

    # On the tenant's session, so the client bedrock.ranking makes from it answers in-process.
    aws.session_for(tenant).events.register("before-send.bedrock-agent-runtime.Retrieve", network)
    with tenant_context(tenant):
        assert bedrock.ranking(tenant, [1], "refunds", 5) == []
    assert [signed_by(r.headers["Authorization"].decode()) for r in sent] == ["ASIAALPHAASSUMED01"]
    assert sent[0].url.startswith("https://bedrock-agent-runtime.eu-west-1.amazonaws.com/")


def test_the_operator_console_says_what_the_tenants_role_signs(client, world, operator, settings):
    settings.AGENT_RUNTIME = "agentcore"
    tenant = silo(world.a.tenant)
    client.force_login(operator)
    page = client.get(reverse("operator:tenant_detail", kwargs={"slug": tenant.slug})).content.decode()
    assert "Assumed with session tags tenant_id, tier, deployment_model for every AWS call" in page
    assert f"signs as <code>{ROLE_A}</code>" in page
    settings.AWS_TENANT_ROLE_ARN = ""
    page = client.get(reverse("operator:tenant_detail", kwargs={"slug": world.b.tenant.slug})).content.decode()
    assert "the portal&#x27;s own AWS credentials" in page or "the portal's own AWS credentials" in page


def answer_on_session(tenant, event: str, body: bytes) -> list:
    """Answer `event` in-process for every client later made from the tenant's session."""
    sent = []

    def network(request, **kwargs):
        sent.append(request)
        return helpers.fake_aws_response(request.url, body, "application/json")

    aws.session_for(tenant).events.register(f"before-send.{event}", network)
    return sent


def test_the_assumed_credentials_sign_the_tenants_bedrock_guardrail_checks(world, sts):
    from agents.guardrails import backends

    tenant = silo(world.a.tenant)
    sts.expect(expected(tenant, ROLE_A), "ASIAALPHAASSUMED01")
    answer = {"usage": {}, "action": "NONE", "outputs": [], "assessments": []}
    sent = answer_on_session(tenant, "bedrock-runtime.ApplyGuardrail", json.dumps(answer).encode())
    with tenant_context(tenant):
        evaluation = backends.apply("hello", source="INPUT", guardrail_id="gr-alpha", version="1")
    assert evaluation.triggers == []
    assert [signed_by(r.headers["Authorization"].decode()) for r in sent] == ["ASIAALPHAASSUMED01"]


def test_access_denied_fails_the_guardrail_check_without_sending_it(world, sts):
    from agents.guardrails import backends
    from agents.guardrails.engine import BackendError

    tenant = silo(world.a.tenant)
    sts.stub.add_client_error("assume_role", "AccessDenied", "nope", 403)
    sent = answer_on_session(tenant, "bedrock-runtime.ApplyGuardrail", b"{}")
    with tenant_context(tenant), pytest.raises(BackendError):
        backends.apply("hello", source="INPUT", guardrail_id="gr-alpha", version="1")
    assert sent == []


def test_the_assumed_credentials_sign_the_tenants_hybrid_embeddings(world, sts, settings):
    from agents.knowledge import hybrid

    settings.KNOWLEDGE_EMBEDDINGS = "bedrock"
    tenant = silo(world.a.tenant)
    sts.expect(expected(tenant, ROLE_A), "ASIAALPHAASSUMED01")
    sent = answer_on_session(tenant, "bedrock-runtime.InvokeModel", json.dumps({"embedding": [3.0, 4.0]}).encode())
    with tenant_context(tenant):
        assert hybrid.embed(["refunds"]) == [[0.6, 0.8]]
    assert [signed_by(r.headers["Authorization"].decode()) for r in sent] == ["ASIAALPHAASSUMED01"]


def test_the_guardrail_checks_and_the_embeddings_keep_their_own_timeouts(world, sts, settings):
    """One tenant, one service and region: the guardrail checks' client has short timeouts
    (a turn waits on them), the embeddings' has botocore's; neither takes the other's."""
    from agents.guardrails import backends
    from agents.knowledge import hybrid

    settings.AWS_REGION = backends._region()
    tenant = silo(world.a.tenant)
    sts.expect(expected(tenant, ROLE_A), "ASIAALPHAASSUMED01")
    with tenant_context(tenant):
        guardrails, embeddings = backends.tenant_client(), hybrid.bedrock_client()
        assert backends.tenant_client() is guardrails  # still one client per purpose
    assert (guardrails.meta.config.read_timeout, guardrails.meta.config.connect_timeout) == (5, 2)
    assert (embeddings.meta.config.read_timeout, embeddings.meta.config.connect_timeout) == (60, 60)

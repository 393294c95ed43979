"""The guardrails API: effective policy and override (GET/PUT), events, false positives; problem JSON."""

from __future__ import annotations

import json

import pytest

from agents.guardrails.models import GuardrailEvent
from tenants.context import tenant_context
from tenants.identity import tokens
from tests.guardrails.conftest import grant_custom_guardrails, set_tier_policy
from tests.portal.helpers import problem, validation_problem
from tests.portal.test_malformed_input import BAD_JSON_BODIES, params

pytestmark = pytest.mark.django_db
BASE = "/api/v1/tenants/alpha/guardrails/"


@pytest.fixture
def admin_client(client, world):
    client.raise_request_exception = False
    client.force_login(world.a.admin)
    return client


def put(client, body):
    return client.put(BASE + "policy/override/", json.dumps(body), content_type="application/json")


def test_it_answers_the_effective_policy_with_tier_defaults_and_override(admin_client, world):
    set_tier_policy(world.a.tenant.tier, {"presets": ["gdpr"]})
    body = admin_client.get(BASE + "policy/").json()
    assert body["tier_defaults"] == {"presets": ["gdpr"]}
    assert body["override"] == {} and body["may_override"] is False
    assert body["effective"]["entities"]["iban"] == "redact"


def test_it_replaces_the_override(admin_client, world):
    grant_custom_guardrails(world.a.tenant)
    response = put(admin_client, {"blocked_terms": ["zebra"], "injection": "high"})
    assert response.status_code == 200
    assert response.json()["effective"]["injection"] == "high"
    assert admin_client.get(BASE + "policy/override/").json() == {"blocked_terms": ["zebra"], "injection": "high"}


def test_it_answers_field_errors_as_a_validation_problem(admin_client, world):
    grant_custom_guardrails(world.a.tenant)
    body = validation_problem(put(admin_client, {"entities": {"email": "shred"}, "colour": "blue"}))
    assert set(body["errors"]) == {"entities.email", "colour"}


def test_it_refuses_an_override_without_the_entitlement(admin_client, world):
    problem(put(admin_client, {"blocked_terms": ["zebra"]}), 403)


def test_it_refuses_an_override_that_names_a_bedrock_guardrail(admin_client, world):
    # The platform's AWS credentials call ApplyGuardrail: a tenant naming a guardrail id would
    # have them check text against any guardrail in the account, another tenant's included.
    grant_custom_guardrails(world.a.tenant)
    body = validation_problem(
        put(
            admin_client,
            {"backend": "bedrock", "bedrock_guardrail_id": "bravo-dedicated-gr", "bedrock_guardrail_version": "3"},
        )
    )
    assert set(body["errors"]) == {"bedrock_guardrail_id", "bedrock_guardrail_version"}
    assert "operator" in json.dumps(body["errors"])
    assert admin_client.get(BASE + "policy/override/").json() == {}


@pytest.mark.parametrize(("body", "content_type"), params(BAD_JSON_BODIES))
def test_it_answers_a_4xx_problem_to_a_malformed_override(admin_client, world, body, content_type):
    grant_custom_guardrails(world.a.tenant)
    response = admin_client.generic("PUT", BASE + "policy/override/", body, content_type)
    assert 400 <= response.status_code < 500
    problem(response, response.status_code)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("blocked_terms", ["zeb\x00ra"]),
        ("denied_topics", [{"name": "Pets", "examples": ["my \x00 cat"]}]),
        ("custom_entities", [{"name": "badge", "pattern": "B\x00[0-9]{4}", "action": "redact"}]),
        ("json_schema", {"type": "object", "title": "An\x00swer"}),
    ],
)
def test_it_refuses_a_null_character_anywhere_in_an_override(admin_client, world, field, value):
    # PostgreSQL's jsonb cannot hold U+0000: this was a 500 there, and the old override stays.
    grant_custom_guardrails(world.a.tenant)
    assert put(admin_client, {"blocked_terms": ["zebra"]}).status_code == 200
    body = validation_problem(put(admin_client, {field: value}))
    assert "Null characters are not allowed." in json.dumps(body["errors"])
    assert admin_client.get(BASE + "policy/override/").json() == {"blocked_terms": ["zebra"]}


def test_members_may_not_read_or_change_guardrails(client, world):
    client.raise_request_exception = False
    client.force_login(world.a.member)
    problem(client.get(BASE + "policy/"), 403)
    problem(put(client, {"blocked_terms": ["x"]}), 403)


def test_a_guardrails_read_token_may_read_but_not_replace_the_override(client, world):
    grant_custom_guardrails(world.a.tenant)
    token = tokens.issue_user_token(world.a.admin, world.a.tenant, scopes=frozenset({"guardrails:read"}))
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}

    refused = client.put(
        BASE + "policy/override/", json.dumps({"injection": "off"}), content_type="application/json", **auth
    )

    assert "guardrails:write" in problem(refused, 403)["detail"]
    assert client.get(BASE + "policy/override/", **auth).json() == {}


def test_it_lists_filters_and_marks_events(admin_client, world):
    with tenant_context(world.a.tenant):
        pii = GuardrailEvent.objects.create(
            stage="input", category="pii", rule="email", action="redact", excerpt="[EMAIL]"
        )
        GuardrailEvent.objects.create(
            stage="output", category="cross_tenant", rule="other_tenant_marker", action="block"
        )
    with tenant_context(world.b.tenant):
        GuardrailEvent.objects.create(stage="input", category="pii", rule="email", action="redact")
    listing = admin_client.get(BASE + "events/").json()
    assert listing["count"] == 2
    assert [e["category"] for e in admin_client.get(BASE + "events/?category=pii").json()["results"]] == ["pii"]
    marked = admin_client.post(
        f"{BASE}events/{pii.pk}/false-positive/", {"false_positive": True}, content_type="application/json"
    )
    assert marked.status_code == 200 and marked.json()["false_positive"] is True
    problem(admin_client.get(f"{BASE}events/999999/"), 404)


def test_the_schema_documents_the_guardrail_endpoints(client, world):
    schema = client.get("/api/schema/?format=json").json()
    paths = schema["paths"]
    assert "/api/v1/tenants/{tenant_slug}/guardrails/policy/" in paths
    assert "put" in paths["/api/v1/tenants/{tenant_slug}/guardrails/policy/override/"]
    assert "/api/v1/tenants/{tenant_slug}/guardrails/events/{id}/false-positive/" in paths

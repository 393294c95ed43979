"""The tenant admin page (policy editor, metrics, try-it console, events) and the operator's view."""

from __future__ import annotations

import html
import re

import pytest

from agents.guardrails import services
from agents.guardrails.models import GuardrailEvent, GuardrailPolicy, TenantGuardrailOverride
from tenants.context import tenant_context
from tenants.models import AuditLog
from tests.agents.helpers import make_turn
from tests.guardrails.conftest import grant_custom_guardrails, set_tier_policy

pytestmark = pytest.mark.django_db
HX = {"HTTP_HX_REQUEST": "true"}
URL = "/t/alpha/guardrails/"


def events_in(tenant, **fields):
    with tenant_context(tenant):
        return GuardrailEvent.objects.create(
            **({"stage": "input", "category": "pii", "rule": "email", "action": "redact"} | fields)
        )


def override_of(tenant):
    with tenant_context(tenant):
        return TenantGuardrailOverride.objects.values_list("config", flat=True).first()


@pytest.mark.parametrize(("role", "status"), [("owner", 200), ("admin", 200), ("member", 403), ("billing", 403)])
def test_it_shows_the_page_to_admins_only(client, world, role, status):
    client.force_login(world.a.user(role))
    assert client.get(URL).status_code == status


def test_it_shows_the_sidebar_link_to_admins_only(client, world):
    client.force_login(world.a.admin)
    assert b'href="/t/alpha/guardrails/"' in client.get("/t/alpha/").content
    client.force_login(world.a.member)
    assert b'href="/t/alpha/guardrails/"' not in client.get("/t/alpha/").content


def test_it_shows_metrics_the_effective_policy_and_this_tenants_events_only(client, world, catalogue):
    set_tier_policy(world.a.tenant.tier, {"presets": ["hipaa"]})
    # Every trigger of a turn belongs to it, a passage flagged while its runtime retrieved too.
    _, _, blocked = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk, status="blocked")
    _, _, redacted = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk)
    events_in(
        world.a.tenant,
        category="injection",
        rule="ignore_previous",
        action="block",
        excerpt="Ignore all previous",
        invocation=blocked,
    )
    events_in(world.a.tenant, false_positive=True, excerpt="mail [EMAIL]", invocation=redacted)
    events_in(world.b.tenant, excerpt="Bravo Inc secret [EMAIL]")
    client.force_login(world.a.admin)
    body = client.get(URL).content.decode()
    assert 'id="stat-fp-rate">50.0%' in body
    assert 'id="stat-blocked">1<' in body
    assert "ignore_previous" in body and "HIPAA" in body
    assert 'data-entity="mrn"' in body and "Compliance preset" in body
    assert "Bravo Inc" not in body
    assert "does not include custom guardrails" in body  # no entitlement: no editor


def test_it_saves_a_valid_override_and_audits_it(client, world):
    grant_custom_guardrails(world.a.tenant)
    client.force_login(world.a.admin)
    response = client.post(
        URL + "policy/",
        {
            "presets": ["gdpr"],
            "entity_email": "block",
            "injection": "high",
            "blocked_terms": "zebra\nsecret project",
            "denied_topics": "Investment advice: no tips\n- which stocks should I buy",
            "custom_entities": r"employee_id | redact | EMP-\d{6}",
            "block_message": "Nope.",
        },
    )
    assert response.status_code == 302
    saved = override_of(world.a.tenant)
    assert saved["entities"] == {"email": "block"} and saved["blocked_terms"] == ["zebra", "secret project"]
    assert saved["denied_topics"] == [
        {"name": "Investment advice", "description": "no tips", "examples": ["which stocks should I buy"]}
    ]
    effective = services.effective_policy(world.a.tenant).config
    assert effective["injection"] == "high" and effective["block_message"] == "Nope."
    with tenant_context(world.a.tenant):
        assert AuditLog.objects.filter(action="guardrails.policy_updated").count() == 1


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("custom_entities", "bad | redact | (a+)+$", "too long"),
        ("custom_entities", "x | redact | EMP-(", "valid regular expression"),
        ("custom_entities", "only two | parts", "name | redact or block | pattern"),
        ("json_schema", "{not json", "Not valid JSON"),
        ("json_schema", '{"type": "nonsense"}', "Not a valid JSON Schema"),
        ("denied_topics", "Topic without examples", "at least one example"),
        ("entity_email", "shred", "Select a valid choice"),
    ],
)
def test_it_refuses_an_invalid_override_with_the_error_at_the_field(client, world, field, value, error):
    grant_custom_guardrails(world.a.tenant)
    client.force_login(world.a.admin)
    response = client.post(URL + "policy/", {field: value})
    assert response.status_code == 400
    assert error in response.content.decode()
    assert override_of(world.a.tenant) is None


def test_it_reports_every_invalid_field_at_once_in_a_summary_at_the_top(client, world):
    # The JSON does not parse and two regexes do not compile: all three on the first save.
    grant_custom_guardrails(world.a.tenant)
    client.force_login(world.a.admin)
    response = client.post(
        URL + "policy/",
        {"json_schema": "{not json", "custom_entities": "a | redact | EMP-(\nb | redact | [x"},
    )
    body = response.content.decode()
    assert response.status_code == 400
    summary = body[body.index('id="error-summary"') : body.index('id="stat-trigger-rate"')]
    assert '<a href="#id_json_schema_field">' in summary and "Not valid JSON" in summary
    assert '<a href="#id_custom_entities_field">' in summary
    assert "Line 1 (pattern)" in summary and "Line 2 (pattern)" in summary
    assert 'id="id_json_schema_field"' in body and 'id="id_custom_entities_field"' in body
    assert override_of(world.a.tenant) is None


def test_it_refuses_an_override_without_the_entitlement(client, world):
    client.force_login(world.a.owner)
    response = client.post(URL + "policy/", {"blocked_terms": "zebra"})
    assert response.status_code == 302
    assert override_of(world.a.tenant) is None


def test_it_runs_text_through_the_policy_in_the_console_without_recording(client, world):
    set_tier_policy(world.a.tenant.tier, {"entities": {"email": "redact"}, "blocked_terms": ["zebra"]})
    client.force_login(world.a.admin)
    response = client.post(URL + "try/", {"text": "mail a@b.co", "stage": "input"}, **HX)
    body = response.content.decode()
    assert response.status_code == 200
    assert "Would pass, redacted" in body
    assert '<div class="gr-result-text">mail [EMAIL]</div>' in body
    blocked = client.post(URL + "try/", {"text": "a Z3BRA here", "stage": "input"}, **HX).content.decode()
    assert "Would be blocked" in blocked and "Blocked term" in blocked and "<code>zebra</code>" in blocked
    with tenant_context(world.a.tenant):
        assert GuardrailEvent.objects.count() == 0


@pytest.mark.parametrize("stage", ["input", "output"])
def test_the_console_never_shows_a_blocked_term_as_stored_or_redacted_text(client, world, stage):
    set_tier_policy(
        world.a.tenant.tier,
        {"entities": {"email": "redact"}, "blocked_terms": ["projectfalcon"], "block_message": "Not here, please."},
    )
    client.force_login(world.a.admin)
    text = "Tell me about projectfalcon and email me at a@b.example"
    body = client.post(URL + "try/", {"text": text, "stage": stage}, **HX).content.decode()
    result = body[body.index('id="try-result"') :]
    assert "Would be blocked" in result
    # What a chat stores when the policy blocks: the block message, not the blocked text.
    stored = re.search(r'<span class="label">([^<]*)</span><div class="gr-result-text">([^<]*)</div>', result)
    assert stored.groups() == ("Stored as the answer", "Not here, please.")
    # The PII row's excerpt keeps its placeholder but none of the words around it.
    excerpts = re.findall(r'<td class="gr-excerpt">([^<]*)</td>', result)
    assert sorted(excerpts) == ["[EMAIL]", "[TERM]"]
    # The term is named once, as the policy's rule; never as text that was stored or redacted.
    assert result.count("projectfalcon") == 1 and "<code>projectfalcon</code>" in result
    assert "a@b.example" not in result


@pytest.mark.parametrize(
    ("stage", "stored"),
    [
        ("input", "This request was blocked by your organisation's guardrails."),
        ("output", "The answer was withheld by your organisation's guardrails."),
    ],
)
def test_the_console_says_what_a_blocked_question_or_answer_is_stored_as_by_default(client, world, stage, stored):
    set_tier_policy(world.a.tenant.tier, {"blocked_terms": ["projectfalcon"]})
    client.force_login(world.a.admin)
    body = client.post(URL + "try/", {"text": "About projectfalcon", "stage": stage}, **HX).content.decode()
    result = html.unescape(body[body.index('id="try-result"') :])
    assert re.search(r'<div class="gr-result-text">([^<]*)</div>', result).group(1) == stored


def test_the_policy_names_both_default_block_messages(client, world):
    client.force_login(world.a.admin)
    body = html.unescape(client.get(URL).content.decode())
    assert (
        '<dt>When blocked</dt><dd><span class="muted">A question:</span> '
        "“This request was blocked by your organisation's guardrails.”<br>"
        '<span class="muted">An answer:</span> “The answer was withheld by your organisation\'s guardrails.”</dd>'
    ) in body


def test_it_marks_and_unmarks_a_false_positive(client, world):
    event = events_in(world.a.tenant)
    client.force_login(world.a.admin)
    response = client.post(f"{URL}events/{event.pk}/false-positive/", {"false_positive": "on"}, **HX)
    assert response.status_code == 200 and b"False positive" in response.content
    with tenant_context(world.a.tenant):
        event.refresh_from_db()
        assert event.false_positive is True and event.marked_by == world.a.admin
    client.post(f"{URL}events/{event.pk}/false-positive/", {"false_positive": "off"})
    with tenant_context(world.a.tenant):
        event.refresh_from_db()
        assert event.false_positive is False


def test_the_operator_sees_every_tenant_and_edits_tier_defaults(client, world, operator):
    events_in(world.a.tenant, category="cross_tenant", rule="other_tenant_marker", action="block")
    events_in(world.b.tenant)
    client.force_login(operator)
    body = client.get("/operator/guardrails/").content.decode()
    assert 'data-tenant="alpha"' in body and 'data-tenant="bravo"' in body
    response = client.post("/operator/guardrails/tiers/standard-test/", {"config": '{"presets": ["pci-dss"]}'})
    assert response.status_code == 302
    assert GuardrailPolicy.objects.get(tier=world.a.tenant.tier).config == {"presets": ["pci-dss"]}
    assert services.effective_policy(world.a.tenant).config["entities"]["cvv"] == "block"
    bad = client.post("/operator/guardrails/tiers/standard-test/", {"config": '{"presets": ["sox"]}'})
    assert bad.status_code == 400 and b"Choose from" in bad.content


def test_the_operator_pages_are_hidden_from_tenant_admins(client, world):
    client.force_login(world.a.owner)
    assert client.get("/operator/guardrails/").status_code == 404


@pytest.mark.parametrize(
    "body",
    [b"", b"%%%&&&===", b"text=\xff\xfe&stage=\xff", b"text=a%00b&stage=output%00", b"[" * 10_000],
)
@pytest.mark.parametrize("view", ["policy/", "try/"])
def test_it_answers_a_malformed_form_with_a_4xx(client, world, view, body):
    grant_custom_guardrails(world.a.tenant)
    client.raise_request_exception = False
    client.force_login(world.a.admin)
    response = client.generic("POST", URL + view, body, "application/x-www-form-urlencoded")
    assert response.status_code in (302, 400)
    assert override_of(world.a.tenant) in (None, {})

"""The bedrock backend: ApplyGuardrail requests checked by Stubber against the real service model."""

from __future__ import annotations

import pytest
from botocore.stub import Stubber
from celery.exceptions import SoftTimeLimitExceeded

from agents.guardrails import backends, enforce, services
from agents.guardrails.engine import BackendError
from tenants.context import tenant_context
from tests.guardrails.conftest import grant_custom_guardrails, set_override, set_tier_policy
from tests.runtime import helpers as runtime_helpers

INTERVENED_ANONYMIZED = {
    "usage": {
        "topicPolicyUnits": 1,
        "contentPolicyUnits": 1,
        "wordPolicyUnits": 1,
        "sensitiveInformationPolicyUnits": 1,
        "sensitiveInformationPolicyFreeUnits": 0,
        "contextualGroundingPolicyUnits": 0,
    },  # noqa: E501
    "action": "GUARDRAIL_INTERVENED",
    "outputs": [{"text": "Mail {EMAIL} about it"}],
    "assessments": [
        {
            "sensitiveInformationPolicy": {
                "piiEntities": [{"match": "jane@example.com", "type": "EMAIL", "action": "ANONYMIZED"}],
                "regexes": [],
            }
        }
    ],
}

INTERVENED_BLOCKED = {
    "usage": {
        "topicPolicyUnits": 1,
        "contentPolicyUnits": 1,
        "wordPolicyUnits": 1,
        "sensitiveInformationPolicyUnits": 1,
        "sensitiveInformationPolicyFreeUnits": 0,
        "contextualGroundingPolicyUnits": 0,
    },  # noqa: E501
    "action": "GUARDRAIL_INTERVENED",
    "outputs": [{"text": "Sorry, the model cannot answer this question."}],
    "assessments": [
        {
            "topicPolicy": {"topics": [{"name": "Investments", "type": "DENY", "action": "BLOCKED"}]},
            "contentPolicy": {"filters": [{"type": "PROMPT_ATTACK", "confidence": "HIGH", "action": "BLOCKED"}]},
        }
    ],
}

NONE = {
    "usage": {
        "topicPolicyUnits": 1,
        "contentPolicyUnits": 1,
        "wordPolicyUnits": 1,
        "sensitiveInformationPolicyUnits": 1,
        "sensitiveInformationPolicyFreeUnits": 0,
        "contextualGroundingPolicyUnits": 0,
    },  # noqa: E501
    "action": "NONE",
    "outputs": [],
    "assessments": [],
}


def _request(text: str, source: str) -> dict:
    return {
        "guardrailIdentifier": "gr-abc123",
        "guardrailVersion": "3",
        "source": source,
        "content": [{"text": {"text": text}}],
    }


@pytest.fixture
def bedrock():
    client = runtime_helpers.boto3_client("bedrock-runtime")
    with Stubber(client) as stub:
        backends.set_client(client)
        yield stub
        stub.assert_no_pending_responses()


def test_it_maps_an_anonymized_answer_to_redaction_without_keeping_the_match(bedrock):
    bedrock.add_response("apply_guardrail", INTERVENED_ANONYMIZED, _request("Mail jane@example.com about it", "INPUT"))
    evaluation = backends.apply("Mail jane@example.com about it", source="INPUT", guardrail_id="gr-abc123", version="3")
    assert evaluation.text == "Mail {EMAIL} about it"
    assert not evaluation.blocked
    [trigger] = evaluation.triggers
    assert (trigger.category, trigger.rule, trigger.action, trigger.excerpt) == ("pii", "email", "redact", "[EMAIL]")


def test_it_maps_blocked_assessments_to_blocking_triggers(bedrock):
    bedrock.add_response("apply_guardrail", INTERVENED_BLOCKED, _request("Which stocks?", "OUTPUT"))
    evaluation = backends.apply("Which stocks?", source="OUTPUT", guardrail_id="gr-abc123", version="3")
    assert evaluation.blocked
    assert [(t.category, t.rule, t.action) for t in evaluation.triggers] == [
        ("denied_topic", "Investments", "block"),
        ("injection", "prompt_attack:high", "block"),
    ]


def test_it_passes_text_the_guardrail_did_not_touch(bedrock):
    bedrock.add_response("apply_guardrail", NONE, _request("Hello", "INPUT"))
    evaluation = backends.apply("Hello", source="INPUT", guardrail_id="gr-abc123", version="3")
    assert (evaluation.text, evaluation.triggers, evaluation.blocked) == ("Hello", [], False)


def test_it_calls_an_error_a_backend_error(bedrock):
    bedrock.add_client_error("apply_guardrail", service_error_code="ThrottlingException", http_status_code=429)
    with pytest.raises(BackendError):
        backends.apply("Hello", source="INPUT", guardrail_id="gr-abc123", version="3")


@pytest.mark.django_db
def test_a_turns_input_goes_through_bedrock_when_the_policy_says_so(world, bedrock):
    set_tier_policy(
        world.a.tenant.tier,
        {"backend": "bedrock", "bedrock_guardrail_id": "gr-abc123", "bedrock_guardrail_version": "3"},
    )
    bedrock.add_response("apply_guardrail", INTERVENED_ANONYMIZED, _request("Mail jane@example.com about it", "INPUT"))
    with tenant_context(world.a.tenant):
        verdict = enforce.screen_input(world.a.tenant, world.a.member, "Mail jane@example.com about it")
    assert (verdict.text, verdict.blocked, verdict.backend) == ("Mail {EMAIL} about it", False, "bedrock")


@pytest.mark.django_db
def test_an_override_stored_with_a_guardrail_id_still_runs_the_tiers_guardrail(world, bedrock):
    # Saved before tenants were refused the key: the Stubber answers only the tier's "gr-abc123".
    set_tier_policy(
        world.a.tenant.tier,
        {"backend": "bedrock", "bedrock_guardrail_id": "gr-abc123", "bedrock_guardrail_version": "3"},
    )
    grant_custom_guardrails(world.a.tenant)
    set_override(world.a.tenant, {"bedrock_guardrail_id": "bravo-dedicated-gr", "bedrock_guardrail_version": "1"})
    bedrock.add_response("apply_guardrail", NONE, _request("Hello", "INPUT"))
    result = services.try_text(world.a.tenant, "Hello", "input")
    assert (result.blocked, result.triggers) == (False, [])


def time_limit_during_apply_guardrail():
    """A client whose ApplyGuardrail call is cut short by Celery's soft time limit, which the
    worker raises wherever it is: here, as the request goes out."""
    client = runtime_helpers.boto3_client("bedrock-runtime")

    def soft_time_limit(**kwargs):
        raise SoftTimeLimitExceeded()

    client.meta.events.register("before-send.bedrock-runtime.ApplyGuardrail", soft_time_limit)
    return client


def test_the_soft_time_limit_is_not_a_backend_error():
    # Not a verdict of the checker: the turn is interrupted (agents.turns fails it, billed).
    with pytest.raises(SoftTimeLimitExceeded):
        backends.apply(
            "Hello", source="OUTPUT", guardrail_id="gr-abc123", version="3", client=time_limit_during_apply_guardrail()
        )

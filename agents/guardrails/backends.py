"""The `bedrock` backend: Amazon Bedrock Guardrails' ApplyGuardrail, mapped to our triggers.

`apply_guardrail(guardrailIdentifier, guardrailVersion, source=INPUT|OUTPUT, content)`
answers `action` (NONE | GUARDRAIL_INTERVENED), `outputs` (the masked text or the
guardrail's blocked message) and `assessments` per policy. A match's raw text is
never kept: excerpts are the placeholders, built like the builtin engine's.
"""

from __future__ import annotations

import os
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from agents.guardrails.engine import BackendError, Evaluation, Trigger

_client = None


def bedrock_client():
    """One client per process (boto3 clients are thread-safe); tests replace it via `set_client`."""
    global _client
    if _client is None:
        import boto3

        _client = boto3.client("bedrock-runtime", region_name=_region(), config=_config())
    return _client


def tenant_client():
    """The client for the tenant in context: signed as its role where it has one
    (tenants.aws: AssumeRole with its session tags), else the process's bedrock_client()."""
    from tenants import aws
    from tenants.context import current_tenant

    own = aws.client(current_tenant(), "bedrock-runtime", region_name=_region(), config=_config(), purpose="guardrails")
    return own or bedrock_client()


def _region() -> str:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def _config():
    from botocore.config import Config

    return Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 2, "mode": "standard"})


def set_client(client) -> None:
    global _client
    _client = client


# Bedrock's PII entity types → our entity keys (others keep their lower-cased type).
_PII_TYPES = {
    "EMAIL": "email",
    "PHONE": "phone",
    "CREDIT_DEBIT_CARD_NUMBER": "card",
    "CREDIT_DEBIT_CARD_CVV": "cvv",
    "US_SOCIAL_SECURITY_NUMBER": "ssn",
    "INTERNATIONAL_BANK_ACCOUNT_NUMBER": "iban",
    "IP_ADDRESS": "ip_address",
    "AWS_ACCESS_KEY": "aws_access_key",
    "AWS_SECRET_KEY": "secret",
    "PASSWORD": "secret",
}
_ACTIONS = {"BLOCKED": "block", "ANONYMIZED": "redact", "NONE": "flag"}


def apply(text: str, *, source: str, guardrail_id: str, version: str, client=None) -> Evaluation:
    if not guardrail_id:
        raise BackendError("No Bedrock guardrail id is configured for this policy.")
    client = client or tenant_client()
    try:
        response = client.apply_guardrail(
            guardrailIdentifier=guardrail_id,
            guardrailVersion=version or "DRAFT",
            source=source,
            content=[{"text": {"text": text}}],
        )
    except SoftTimeLimitExceeded:
        # The worker's time is up while it waits for Bedrock: not a verdict of the checker
        # (a backend error blocks in closed mode and lets the text through in open mode),
        # the turn is interrupted, as anywhere else (agents.turns ends it failed, billed).
        raise
    except Exception as exc:  # botocore ClientError, endpoint and credential errors alike
        raise BackendError(f"Bedrock ApplyGuardrail failed: {type(exc).__name__}") from exc
    return map_response(text, response)


def map_response(text: str, response: dict[str, Any]) -> Evaluation:
    triggers = list(_triggers(response.get("assessments") or []))
    evaluation = Evaluation(text=text, triggers=triggers, checks=1)
    if response.get("action") == "GUARDRAIL_INTERVENED":
        outputs = response.get("outputs") or []
        masked = "".join(o.get("text", "") for o in outputs)
        if any(t.action == "block" for t in triggers):
            evaluation.text = ""  # the caller shows the policy's message; Bedrock's output is its own message
        elif masked:
            evaluation.text = masked
        if not triggers:  # intervened without saying why: treat as a block, never as a pass
            evaluation.triggers.append(Trigger("content", "bedrock_intervened", "block", ""))
    return evaluation


def _triggers(assessments: list[dict]):
    for assessment in assessments:
        for topic in (assessment.get("topicPolicy") or {}).get("topics", []):
            yield Trigger("denied_topic", topic.get("name", "topic"), _ACTIONS.get(topic.get("action"), "block"))
        for item in (assessment.get("contentPolicy") or {}).get("filters", []):
            category = "injection" if item.get("type") == "PROMPT_ATTACK" else "content"
            rule = f"{item.get('type', 'filter').lower()}:{item.get('confidence', '').lower()}"
            yield Trigger(category, rule, _ACTIONS.get(item.get("action"), "block"))
        words = assessment.get("wordPolicy") or {}
        for item in words.get("customWords", []) + words.get("managedWordLists", []):
            yield Trigger(
                "blocked_term",
                item.get("type", "custom_word").lower(),
                _ACTIONS.get(item.get("action"), "block"),
                "[TERM]",
            )
        sensitive = assessment.get("sensitiveInformationPolicy") or {}
        for item in sensitive.get("piiEntities", []):
            entity = _PII_TYPES.get(item.get("type", ""), item.get("type", "pii").lower())
            yield Trigger("pii", entity, _ACTIONS.get(item.get("action"), "block"), f"[{entity.upper()}]")
        for item in sensitive.get("regexes", []):
            name = item.get("name", "regex")
            yield Trigger("custom_entity", name, _ACTIONS.get(item.get("action"), "block"), f"[{name.upper()}]")

"""Guardrail policies (tier defaults, tenant overrides), canaries and trigger events."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models

from tenants.scoping import PlatformModel, TenantOwnedModel


class GuardrailPolicy(PlatformModel):
    """The operator's defaults for every tenant on a tier (see agents.guardrails.policy for the shape)."""

    tier = models.OneToOneField("tenants.Tier", on_delete=models.CASCADE, related_name="guardrail_policy")
    config = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Guardrails for {self.tier}"


class TenantGuardrailOverride(TenantOwnedModel):
    """What a tenant admin changed on top of the tier defaults (needs `custom_guardrails`)."""

    config = models.JSONField(default=dict, blank=True)
    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant"], name="guardrails_one_override_per_tenant")]


def new_canary() -> str:
    return f"cnry-{secrets.token_hex(10)}"


class TenantCanary(TenantOwnedModel):
    """A random marker planted in a tenant's data (agent instructions, a demo document).

    It means nothing to anyone, so if it ever shows up in *another* tenant's answer, data
    crossed the line; the output guard of every other tenant blocks on it."""

    value = models.CharField(max_length=64, unique=True, default=new_canary)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant"], name="guardrails_one_canary_per_tenant")]


class Stage(models.TextChoices):
    INPUT = "input", "Input"
    OUTPUT = "output", "Output"
    RETRIEVAL = "retrieval", "Retrieved context"


class Category(models.TextChoices):
    PII = "pii", "PII"
    CUSTOM_ENTITY = "custom_entity", "Custom entity"
    BLOCKED_TERM = "blocked_term", "Blocked term"
    DENIED_TOPIC = "denied_topic", "Denied topic"
    INJECTION = "injection", "Prompt injection"
    CROSS_TENANT = "cross_tenant", "Cross-tenant leakage"
    FORMAT = "format", "Answer format"
    CONTENT = "content", "Content filter"
    BACKEND_ERROR = "backend_error", "Guardrail backend error"


class GuardrailEvent(TenantOwnedModel):
    """One trigger of one rule. `excerpt` is built from redacted text: never the raw value."""

    invocation = models.ForeignKey(
        "agents.Invocation", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    stage = models.CharField(max_length=16, choices=Stage.choices)
    category = models.CharField(max_length=24, choices=Category.choices)
    rule = models.CharField(max_length=120)
    action = models.CharField(max_length=12)  # block | redact | flag | allow
    excerpt = models.CharField(max_length=300, blank=True)
    score = models.FloatField(null=True, blank=True)
    backend = models.CharField(max_length=16, default="builtin")
    false_positive = models.BooleanField(default=False)
    marked_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["tenant", "created_at"], name="guardrails_event_tenant_time")]

    def __str__(self) -> str:
        return f"{self.stage}/{self.category}/{self.rule} → {self.action}"

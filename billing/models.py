"""Metering. The minimal UsageEvent the chat turn writes; the metering issue
extends it (price book version, roll-ups, quotas, invoices)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from tenants.scoping import TenantOwnedModel


class UsageKind(models.TextChoices):
    AGENT_TURN = "agent_turn", "Agent turn"


class UsageEvent(TenantOwnedModel):
    """Append-only; unique per (invocation, kind), so a retried task cannot bill twice."""

    invocation_id = models.UUIDField()
    kind = models.CharField(max_length=20, choices=UsageKind.choices, default=UsageKind.AGENT_TURN)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    agent_slug = models.CharField(max_length=60, blank=True)
    model_key = models.CharField(max_length=100, blank=True)
    outcome = models.CharField(max_length=10, blank=True, help_text="done, failed or cancelled")
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    tool_calls = models.PositiveIntegerField(default=0)
    runtime_seconds = models.DecimalField(max_digits=12, decimal_places=3, default=0)
    cost = models.DecimalField(max_digits=14, decimal_places=8, default=0)
    estimated = models.BooleanField(default=False, help_text="Token counts estimated: the provider gave none.")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [models.UniqueConstraint(fields=["invocation_id", "kind"], name="usage_event_once_per_kind")]
        indexes = [models.Index(fields=["tenant", "created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.invocation_id}"

    def save(self, *args, **kwargs):
        if self.pk is not None and not kwargs.get("force_insert"):
            raise ValueError("Usage events are append-only")
        super().save(*args, **kwargs)

"""Agent versions: what defines an agent's behaviour, snapshotted, reviewed, then published.

`AgentVersion` follows its agent's ownership (SharedOrTenantModel, like `Agent`): a
shared agent's versions have no owner and are the operators'; a tenant's own agent's
versions belong to that tenant, and no other tenant sees them — in Python through the
scoped manager, on PostgreSQL through row-level security (tenants/rls.py).

A version is immutable once written except for its review state. Approving one copies
its fields onto the live `Agent` row (services.approve), so the chat turn keeps reading
one row and never this table.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from tenants.scoping import SharedOrTenantModel


class VersionState(models.TextChoices):
    DRAFT = "draft", "Draft"
    SUBMITTED = "submitted", "Waiting for review"
    APPROVED = "approved", "Published"
    REJECTED = "rejected", "Rejected"
    SUPERSEDED = "superseded", "Superseded"


class AgentVersion(SharedOrTenantModel):
    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=300, blank=True)
    instructions = models.TextField()
    model = models.ForeignKey("agents.ModelOffering", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    offered_to_tiers = models.JSONField(default=list, blank=True, help_text="Tier slugs (shared agents).")
    change_note = models.CharField(max_length=500, blank=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    author_email = models.CharField(max_length=254, blank=True, help_text="Kept when the author's account goes.")
    created_at = models.DateTimeField(auto_now_add=True)
    state = models.CharField(max_length=10, choices=VersionState.choices, default=VersionState.DRAFT)
    submitted_at = models.DateTimeField(null=True, blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reviewed_by_email = models.CharField(max_length=254, blank=True)
    reviewed_at = models.DateTimeField(null=True, blank=True)
    review_note = models.CharField(max_length=500, blank=True, help_text="Why it was rejected.")
    rolled_back_from = models.PositiveIntegerField(
        null=True, blank=True, help_text="The earlier version this one copies (a roll back)."
    )

    class Meta:
        ordering = ["agent", "-number"]
        constraints = [models.UniqueConstraint(fields=["agent", "number"], name="agent_version_number_unique")]
        indexes = [models.Index(fields=["owner_tenant", "state"], name="agent_version_owner_state")]

    def __str__(self) -> str:
        return f"{self.name} v{self.number}"

    @property
    def is_pending(self) -> bool:
        return self.state == VersionState.SUBMITTED

"""Agent skills: named procedures an agent follows, shared by the operator or a tenant's own.

* `Skill` is shared-or-tenant (SharedOrTenantModel, like Agent): a shared skill has
  no owner and is offered to the tiers in `tiers`; a tenant's skill is seen by that
  tenant only (scoped manager; row-level security on PostgreSQL). A tenant skill may
  `extend` a shared one: the bridge pattern, where the shared skill's common steps
  run first and then hand over to the tenant's own steps.
* `AgentSkill` is tenant-owned: a tenant admin chose `skill` for `agent` in this tenant.
"""

from __future__ import annotations

from django.db import models

from tenants.scoping import SharedOrTenantModel, TenantOwnedModel

MAX_INSTRUCTIONS_CHARS = 8000  # one skill; the whole Skills section is capped in the runtime too


class SkillStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    ACTIVE = "active", "Active"
    RETIRED = "retired", "Retired"


class Skill(SharedOrTenantModel):
    key = models.SlugField(max_length=64)
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=500, help_text="When to use the skill (one line).")
    instructions = models.TextField(max_length=MAX_INSTRUCTIONS_CHARS, help_text="The steps, in markdown.")
    status = models.CharField(max_length=10, choices=SkillStatus.choices, default=SkillStatus.DRAFT)
    tiers = models.JSONField(default=list, blank=True, help_text="Tier slugs offered the skill (shared skills).")
    extends = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="A shared skill whose common steps run before this tenant skill's own.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["owner_tenant", "key"], name="skill_key_unique_per_owner"),
            models.UniqueConstraint(
                fields=["key"], condition=models.Q(owner_tenant__isnull=True), name="skill_shared_key_unique"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def active(self) -> bool:
        return self.status == SkillStatus.ACTIVE

    def validate_constraints(self, exclude=None):
        # The key's uniqueness per owner is checked by services.save_skill (and the database's
        # constraints): Django's check reads through the default manager, which needs a tenant
        # in the context that the operator console does not have.
        pass


class AgentSkill(TenantOwnedModel):
    """Tenant-owned: `skill` is used by `agent` in this tenant (chosen by a tenant admin)."""

    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="+")
    skill = models.ForeignKey(Skill, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "agent", "skill"], name="agent_skill_unique")]

"""The agent platform: model offerings, agents, conversations, messages, invocations.

A chat turn is one `Invocation`: its UUID is the idempotency key the Celery task,
the runtime and the usage event all share. Conversations, messages and
invocations are tenant-owned; agents and model offerings are shared catalogue
rows that a tenant may also own privately (its own agents, its fine-tuned models).
"""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from tenants.scoping import SharedOrTenantModel, TenantOwnedModel, tenant_key_indexed_by_meta


class Provider(models.TextChoices):
    OFFLINE = "offline", "Offline (deterministic, no network)"
    BEDROCK = "bedrock", "Amazon Bedrock"
    OPENAI = "openai", "OpenAI-compatible endpoint"


class ModelOffering(SharedOrTenantModel):
    """A model the platform offers. Which tiers may use it is the tier's
    `allowed_models` list (its first entry is the tier's default). A row with an
    owner tenant is that tenant's fine-tuned model: it replaces `base` for that
    tenant only."""

    key = models.SlugField(max_length=100, unique=True, help_text="Stable id used by tiers and agents.")
    name = models.CharField(max_length=100)
    provider = models.CharField(max_length=10, choices=Provider.choices)
    model_id = models.CharField(
        max_length=300, help_text="Bedrock model id, inference-profile ARN or custom-model ARN; or the API model name."
    )
    price_per_1k_input = models.DecimalField(
        max_digits=12, decimal_places=6, default=Decimal("0"), validators=[MinValueValidator(Decimal("0"))]
    )
    price_per_1k_output = models.DecimalField(
        max_digits=12, decimal_places=6, default=Decimal("0"), validators=[MinValueValidator(Decimal("0"))]
    )
    context_window = models.PositiveIntegerField(default=8192)
    base = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="fine_tunes",
        help_text="For a tenant's fine-tuned model: the shared model it replaces.",
    )
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class AgentStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    PUBLISHED = "published", "Published"


class Agent(SharedOrTenantModel):
    """An agent: shared (operator-owned, offered to tiers) or a tenant's own."""

    slug = models.SlugField(max_length=60)
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=300, blank=True)
    instructions = models.TextField(blank=True)
    model = models.ForeignKey(
        ModelOffering,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="Preferred model; if the tenant's tier does not allow it, the tier's default is used.",
    )
    offered_to_tiers = models.JSONField(default=list, blank=True, help_text="Tier slugs (shared agents).")
    status = models.CharField(max_length=10, choices=AgentStatus.choices, default=AgentStatus.DRAFT)
    identity = models.OneToOneField(
        "identity.AgentIdentity",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="agent",
        help_text="The agent's workload identity (actor credentials for act-on-behalf tokens).",
    )
    # The number of the approved registry version these fields were copied from
    # (agents.registry); empty for an agent written before the registry or never approved.
    published_version = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["owner_tenant", "slug"], name="agent_slug_unique_per_owner"),
            models.UniqueConstraint(
                fields=["slug"], condition=models.Q(owner_tenant__isnull=True), name="agent_shared_slug_unique"
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Conversation(TenantOwnedModel):
    """A member's private conversation with one agent.

    Deleting one hides it (`deleted_at`) rather than removing the row: its invocations
    cascade from it, and they are the record behind each usage event (the same id),
    guardrail event and trace. Nothing billed changes; the person no longer sees it
    anywhere (agents.services.access_conversation, owned_conversations)."""

    tenant = tenant_key_indexed_by_meta()  # Meta.indexes leads with tenant
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="+")
    title = models.CharField(max_length=200, blank=True)
    # Stable per conversation and 33–256 characters, as AgentCore requires.
    runtime_session_id = models.CharField(max_length=256, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True, help_text="Deleted by its owner: hidden everywhere.")

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["tenant", "user", "-updated_at"])]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"

    def save(self, *args, **kwargs):
        if not self.runtime_session_id:
            self.runtime_session_id = f"conv-{uuid.uuid4().hex}-{uuid.uuid4().hex[:8]}"  # 46 chars
        super().save(*args, **kwargs)


class MessageStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    STREAMING = "streaming", "Streaming"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"
    BLOCKED = "blocked", "Blocked"
    CANCELLED = "cancelled", "Cancelled"


FINAL_STATUSES = (MessageStatus.DONE, MessageStatus.FAILED, MessageStatus.BLOCKED, MessageStatus.CANCELLED)


class Message(TenantOwnedModel):
    class Role(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"

    tenant = tenant_key_indexed_by_meta()  # Meta.indexes leads with tenant
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="+")
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField(blank=True)
    status = models.CharField(max_length=10, choices=MessageStatus.choices, default=MessageStatus.DONE)
    citations = models.JSONField(default=list, blank=True)
    tool_calls = models.JSONField(default=list, blank=True)
    error = models.CharField(max_length=500, blank=True)
    blocked_by_guardrails = models.BooleanField(
        default=False,
        help_text="The content is the guardrails' block message: they blocked the question, the answer, "
        "or what a failed turn had written of its answer.",
    )
    feedback = models.SmallIntegerField(default=0, help_text="-1 thumbs down, 0 none, 1 thumbs up")
    model_label = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["tenant", "conversation", "created_at"])]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"


class Invocation(TenantOwnedModel):
    """One agent turn. Its id is the idempotency key end to end."""

    tenant = tenant_key_indexed_by_meta()  # Meta.indexes leads with tenant
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="+")
    user_message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="+")
    assistant_message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=10, choices=MessageStatus.choices, default=MessageStatus.QUEUED)
    queue = models.CharField(max_length=63, blank=True)
    model_key = models.CharField(max_length=100, blank=True)
    model_id = models.CharField(max_length=300, blank=True)
    runtime = models.CharField(max_length=20, blank=True)
    queued_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    first_token_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    tool_call_count = models.PositiveIntegerField(default=0)
    usage_estimated = models.BooleanField(default=False)
    # What earlier attempts used and no usage event recorded (an attempt retried after a
    # transient runtime error, or whose worker died): the turn's one usage event adds it.
    carried_input_tokens = models.PositiveIntegerField(default=0)
    carried_output_tokens = models.PositiveIntegerField(default=0)
    carried_tool_calls = models.PositiveIntegerField(default=0)
    carried_runtime_seconds = models.DecimalField(max_digits=12, decimal_places=3, default=0)
    carried_estimated = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    # Who runs the current attempt: "host:pid:token", set by its claim (agents.turns). A
    # redelivery of the task may take the turn over when that process is gone.
    lease = models.CharField(max_length=300, blank=True)
    error = models.CharField(max_length=500, blank=True)
    # The turn's steps with their timings (agents.tracing): shown under the answer.
    trace = models.JSONField(default=list, blank=True)
    # Checks the input guardrails ran when the turn was posted; metered with the output's.
    input_guardrail_checks = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-queued_at"]
        indexes = [
            models.Index(fields=["tenant", "status"]),
            # The turns of a window (agents.concurrency): finished in it, or not finished (NULL).
            models.Index(fields=["finished_at"], name="invocation_finished_at"),
        ]

    def __str__(self) -> str:
        return f"Invocation {self.pk} ({self.status})"


class StreamEvent(TenantOwnedModel):
    """Deltas of a running turn, for the SSE relay when Redis is not configured.
    `seq` is the SSE event id: a reconnect resumes after Last-Event-ID."""

    invocation = models.ForeignKey(Invocation, on_delete=models.CASCADE, related_name="+")
    seq = models.PositiveIntegerField()
    kind = models.CharField(max_length=20)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["invocation", "seq"]
        constraints = [models.UniqueConstraint(fields=["invocation", "seq"], name="stream_event_seq_unique")]

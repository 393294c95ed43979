from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from decimal import Decimal
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from tenants import rls
from tenants.context import current_scope
from tenants.roles import Role
from tenants.scoping import PlatformModel, TenantOwnedModel

slug_validator = RegexValidator(
    r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?$",
    "Use 1–50 lowercase letters, digits and hyphens, starting and ending with a letter or digit.",
)


def runtime_url_validator(value: str) -> None:
    """A dedicated HTTP runtime's base URL: http(s), a host, nothing secret or extra.
    Hosts may be single-label service names (http://initech-runtime:8080)."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        raise ValidationError("Enter a URL such as http://runtime.internal:8080.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError("Enter a URL such as http://runtime.internal:8080.")
    if parts.username or parts.password or parts.query or parts.fragment or any(c.isspace() for c in value):
        raise ValidationError("The runtime URL may not carry credentials, a query or a fragment.")


# A tenant's AWS region travels to the runtime in a header (…-Custom-Region) and names AWS
# endpoints: only a region's shape (us-east-1, us-gov-west-1, us-isob-east-1) is kept, so no
# value can carry a line break or a space into a request.
region_validator = RegexValidator(
    r"\A[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-[0-9]\Z",
    "Enter an AWS region such as us-east-1 or eu-west-2.",
    flags=re.ASCII,
)


queue_validator = RegexValidator(r"^[a-z0-9][a-z0-9._-]{0,62}$", "Use lowercase letters, digits, '.', '_' and '-'.")


class UserManager(BaseUserManager):
    use_in_migrations = True

    def _create_user(self, email: str, password: str | None, **extra):
        if not email:
            raise ValueError("Users need an email address")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra):
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra):
        extra.update(is_staff=True, is_superuser=True)
        return self._create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin, PlatformModel):
    """A person. Which tenants they belong to, and as what, is in Membership."""

    email = models.EmailField(unique=True)
    full_name = models.CharField(max_length=150, blank=True)
    is_staff = models.BooleanField(default=False, help_text="Operators of the SaaS: operator console and Django admin.")
    is_active = models.BooleanField(default=True)
    date_joined = models.DateTimeField(default=timezone.now)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        ordering = ["email"]

    def __str__(self) -> str:
        return self.email

    @property
    def display_name(self) -> str:
        return self.full_name or self.email.split("@")[0]

    def get_full_name(self) -> str:
        return self.full_name

    def get_short_name(self) -> str:
        return self.display_name


class DeploymentModel(models.TextChoices):
    POOL = "pool", "Pool — shared runtime and stores"
    BRIDGE = "bridge", "Bridge — shared runtime, tenant-specific skills and knowledge"
    SILO = "silo", "Silo — dedicated runtime, stores and queue"


class Tier(PlatformModel):
    """A plan the SaaS sells: price, monthly token quota, limits and features."""

    slug = models.SlugField(max_length=50, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=100)
    description = models.CharField(max_length=300, blank=True)
    monthly_price = models.DecimalField(
        max_digits=12, decimal_places=2, default=Decimal("0"), validators=[MinValueValidator(Decimal("0"))]
    )
    # The limits' verbose names are their names everywhere (billing.models.LimitKind's labels), so
    # the tier form calls each limit what the tenant's pages and refusals call it.
    included_tokens = models.BigIntegerField("Monthly token quota", default=0, validators=[MinValueValidator(0)])
    overage_price_per_1k_tokens = models.DecimalField(
        max_digits=12, decimal_places=6, default=Decimal("0"), validators=[MinValueValidator(Decimal("0"))]
    )
    requests_per_minute = models.PositiveIntegerField("Requests per minute", default=60)
    tokens_per_minute = models.PositiveIntegerField("Tokens per minute", default=100_000)
    concurrent_sessions = models.PositiveIntegerField("Concurrent sessions", default=5)
    knowledge_storage_mb = models.PositiveIntegerField(
        "Knowledge storage (MB)",
        default=1024,
        help_text="What the documents of a tenant's knowledge bases may take in all (1 MB = 1,048,576 bytes).",
    )
    overage_allowed = models.BooleanField(
        default=True,
        help_text="Past the monthly token quota: bill overage (on) or refuse further turns until next month (off).",
    )
    allowed_models = models.JSONField(default=list, blank=True, help_text="Model ids this tier may use.")
    default_features = models.JSONField(default=list, blank=True, help_text="Feature keys included.")
    celery_queue = models.CharField(max_length=63, validators=[queue_validator])
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["monthly_price", "name"]

    def __str__(self) -> str:
        return self.name

    def clean(self):
        from tenants.entitlements import unknown_features

        unknown = unknown_features(self.default_features)
        if unknown:
            raise ValidationError({"default_features": f"Unknown features: {', '.join(sorted(unknown))}"})
        if not isinstance(self.allowed_models, list) or not all(isinstance(m, str) and m for m in self.allowed_models):
            raise ValidationError({"allowed_models": "A list of model ids."})
        errors = {}
        # Operators, tenants and invoices know a tier by its name: two that read alike are one too many.
        name = (self.name or "").strip()
        same_name = Tier.objects.exclude(pk=self.pk).filter(name__iexact=name).first() if name else None
        if same_name is not None:
            errors["name"] = f"Another tier is called {same_name.name}."
        # A tenant's dedicated queue is its own workers': a tier's tenants sent there would share them.
        if self.celery_queue:
            for tenant in Tenant.objects.select_related("tier").order_by("slug"):
                if tenant.own_queue() == self.celery_queue:
                    errors["celery_queue"] = (
                        f"{self.celery_queue} is the dedicated queue of {tenant.name} ({tenant.slug})."
                    )
                    break
        if errors:
            raise ValidationError(errors)


# The embedded development runtime (AGENT_RUNTIME=local, `make run`'s default): the reference
# agent inside the worker, one process for every tenant.
EMBEDDED_RUNTIME = "local"


def aws_bindings_apply(kind: str | None = None) -> bool:
    """Whether tenants' AWS resource bindings are used by this portal: its AgentCore runtime,
    AgentCore Memory and Bedrock knowledge base. One setting decides, the runtime kind
    (AGENT_RUNTIME, or `kind`): on the embedded `local` runtime dedication does not apply —
    every tenant's turns run in the worker, and its memories and knowledge are the portal's
    own (its table and index), so nothing reaches AWS; on `http` and `agentcore` they apply."""
    return (settings.AGENT_RUNTIME if kind is None else kind) != EMBEDDED_RUNTIME


@dataclass(frozen=True)
class ResourceBindings:
    """Where a tenant's workloads run. Code asks this, never the model name.

    Pool and bridge tenants share the tier's queue and the platform runtime;
    silo tenants get dedicated resources, named in Tenant.resource_bindings.
    """

    celery_queue: str
    runtime_arn: str = ""
    runtime_url: str = ""
    memory_id: str = ""
    knowledge_base_id: str = ""
    knowledge_data_source_id: str = ""
    gateway_id: str = ""
    iam_role_arn: str = ""
    dedicated: bool = False
    dedicated_queue: bool = False  # celery_queue is the tenant's own, not its tier's

    def dedicated_capacity(self, kind: str) -> bool:
        """Whether the tenant's turns use capacity of their own: its own queue (so its
        own workers) and, on a remote runtime, its own runtime. On the in-process `local`
        runtime the runtime is the worker, so the queue decides."""
        if not self.dedicated_queue:
            return False
        return kind == "local" or bool(self.dedicated_runtime(kind))

    def dedicated_runtime(self, kind: str) -> str | None:
        """Where a dedicated tenant's turns must run for runtime `kind`: its own ARN
        (agentcore) or URL (http), "" when it has none (the turn then fails closed,
        never falls back to the shared runtime); None when the tenant is not dedicated,
        or for the in-process `local` runtime, a single-process dev runtime where
        dedication does not apply."""
        if not self.dedicated:
            return None
        if kind == "agentcore":
            return self.runtime_arn
        if kind == "http":
            return self.runtime_url
        return None

    def dedicated_memory(self, kind: str) -> str:
        """The AgentCore Memory id a dedicated tenant's memories live in on runtime `kind`;
        "" when they live in the portal's own table: not dedicated, no memory bound, or the
        embedded `local` runtime, where AWS bindings do not apply (aws_bindings_apply)."""
        if not (self.dedicated and self.memory_id and aws_bindings_apply(kind)):
            return ""
        return self.memory_id

    def dedicated_gateway(self, kind: str) -> str:
        """The AgentCore Gateway that serves a dedicated tenant's tools on runtime `kind`:
        its gateway_id where AWS bindings apply (aws_bindings_apply); "" otherwise (not
        dedicated, no gateway bound, or the embedded `local` runtime), when the portal's own
        tool handlers serve them."""
        if not (self.dedicated and self.gateway_id and aws_bindings_apply(kind)):
            return ""
        return self.gateway_id


BINDING_KEYS = (
    "runtime_arn",
    "runtime_url",
    "memory_id",
    "knowledge_base_id",
    "knowledge_data_source_id",
    "gateway_id",
    "iam_role_arn",
    "celery_queue",
)


def _aws_shape(pattern: str, example: str) -> RegexValidator:
    return RegexValidator(rf"\A(?:{pattern})\Z", f"Not a valid value; it looks like {example}.", flags=re.ASCII)


# The shapes AWS itself validates (botocore service models: bedrock-agentcore-control
# AgentRuntimeArn, MemoryId, GatewayId, RoleArn with IAM's role names and paths;
# bedrock-agent Id for knowledge bases and data sources), so a typo is refused here
# instead of failing every turn of the tenant later.
BINDING_VALIDATORS = {
    "runtime_arn": _aws_shape(
        r"arn:aws(-[^:]+)?:bedrock-agentcore:[a-z0-9-]+:[0-9]{12}:runtime/[a-zA-Z][a-zA-Z0-9_]{0,47}-[a-zA-Z0-9]{10}",
        "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/my_agent-a1B2c3D4e5",
    ),
    "runtime_url": runtime_url_validator,
    "iam_role_arn": _aws_shape(
        r"arn:aws(-[^:]+)?:iam::[0-9]{12}:role/([\w+=,.@-]+/)*[\w+=,.@-]{1,64}",
        "arn:aws:iam::123456789012:role/my-agent-role",
    ),
    "memory_id": _aws_shape(r"[a-zA-Z][a-zA-Z0-9_-]{0,99}-[a-zA-Z0-9]{10}", "my_memory-a1B2c3D4e5"),
    "knowledge_base_id": _aws_shape(r"[0-9a-zA-Z]{10}", "ABCDE12345 (10 letters or digits)"),
    "knowledge_data_source_id": _aws_shape(r"[0-9a-zA-Z]{10}", "ABCDE12345 (10 letters or digits)"),
    "gateway_id": _aws_shape(r"([0-9a-z]-?){1,100}-[0-9a-z]{10}", "my-gateway-a1b2c3d4e5"),
    "celery_queue": queue_validator,
}
# Resources that name one tenant's data, compute or credentials: never bound to two tenants
# (a role shared with another tenant would sign that tenant's AWS calls as this one's; a
# gateway would serve its tool calls). Every binding but the Celery queue, which only routes
# work and which tenants may share.
EXCLUSIVE_BINDINGS = tuple(key for key in BINDING_KEYS if key != "celery_queue")


class TenantStatus(models.TextChoices):
    ACTIVE = "active", "Active"
    SUSPENDED = "suspended", "Suspended"


class Tenant(PlatformModel):
    """A customer organisation. The root every tenant-owned row points at."""

    slug = models.SlugField(max_length=50, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=150)
    tier = models.ForeignKey(Tier, on_delete=models.PROTECT, related_name="tenants")
    deployment_model = models.CharField(max_length=10, choices=DeploymentModel.choices, default=DeploymentModel.POOL)
    region = models.CharField(max_length=32, default="us-east-1", validators=[region_validator])
    status = models.CharField(max_length=10, choices=TenantStatus.choices, default=TenantStatus.ACTIVE)
    suspended_reason = models.CharField(max_length=300, blank=True)
    resource_bindings = models.JSONField(default=dict, blank=True)
    feature_grants = models.JSONField(default=list, blank=True)
    feature_revocations = models.JSONField(default=list, blank=True)
    # Set by the tenant's owners and admins; TenantMiddleware sends a member without an
    # authenticator app to set one up before any page of the tenant works.
    require_mfa = models.BooleanField(
        "members must use two-factor authentication", default=False, help_text="Members need an authenticator app."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_active(self) -> bool:
        return self.status == TenantStatus.ACTIVE

    @classmethod
    def by_slug(cls, slug: str) -> Tenant | None:
        """The tenant a URL names, or None.

        A string no tenant's slug can be is not looked up at all: PostgreSQL
        refuses a NUL byte in a query parameter with a DataError (a 500).
        """
        if not isinstance(slug, str) or not slug_validator.regex.fullmatch(slug):
            return None
        return cls.objects.select_related("tier").filter(slug=slug).first()

    @property
    def bindings(self) -> ResourceBindings:
        raw = self.resource_bindings or {}
        dedicated = self.deployment_model == DeploymentModel.SILO
        queue = raw.get("celery_queue") or (f"tenant-{self.slug}" if dedicated else self.tier.celery_queue)
        return ResourceBindings(
            celery_queue=queue,
            dedicated=dedicated,
            dedicated_queue=queue != self.tier.celery_queue,
            **{k: str(raw.get(k, "")) for k in BINDING_KEYS if k != "celery_queue"},
        )

    def own_queue(self) -> str:
        """The queue bound to this tenant alone ("" when it uses its tier's)."""
        raw = (self.resource_bindings or {}).get("celery_queue") or ""
        return raw or (self.bindings.celery_queue if self.bindings.dedicated else "")

    def binding_errors(self) -> dict[str, list[str]]:
        """What is wrong with the resource bindings, by binding key: a value of the wrong
        shape, or a dedicated resource that is shared (a tier's queue, the platform's
        runtime, or a resource already bound to another tenant)."""
        errors: dict[str, list[str]] = {}
        raw = self.resource_bindings or {}
        for key in BINDING_KEYS:
            value = raw.get(key)
            if value in (None, ""):
                continue
            if not isinstance(value, str) or value != value.strip():
                errors.setdefault(key, []).append("Must be text without spaces around it.")
                continue
            try:
                BINDING_VALIDATORS[key](value)
            except ValidationError as exc:
                errors.setdefault(key, []).extend(exc.messages)
        if raw.get("knowledge_data_source_id") and not raw.get("knowledge_base_id"):
            errors.setdefault("knowledge_data_source_id", []).append(
                "A data source belongs to a knowledge base: bind that too."
            )
        # The sharing checks below look only at the values of a valid shape.
        raw = {key: value for key, value in raw.items() if key not in errors}
        # The platform's own resources, which every pool tenant shares: bound as a tenant's
        # "own", its dedication would be a name only (the shared role signs for every tenant;
        # the pooled knowledge base holds every tenant's documents).
        shared = {
            "runtime_arn": (settings.AGENTCORE_RUNTIME_ARN, "runtime"),
            "runtime_url": (settings.RUNTIME_URL, "runtime"),
            "iam_role_arn": (settings.AWS_TENANT_ROLE_ARN, "role"),
            "knowledge_base_id": (settings.KNOWLEDGE_BEDROCK_KB_ID, "knowledge base"),
            "knowledge_data_source_id": (settings.KNOWLEDGE_BEDROCK_DATA_SOURCE_ID, "data source"),
        }
        for key, (platform, what) in shared.items():
            if raw.get(key) and raw[key] == platform:
                errors.setdefault(key, []).append(f"This is the platform's shared {what}, not a dedicated one.")
        queue = "" if "celery_queue" in errors else self.own_queue()
        if queue and queue in set(Tier.objects.values_list("celery_queue", flat=True)):
            errors.setdefault("celery_queue", []).append(f"{queue} is a tier's shared queue, not a dedicated one.")
        others = Tenant.objects.select_related("tier").exclude(pk=self.pk).order_by("slug")
        for other in others:
            other_raw = other.resource_bindings if isinstance(other.resource_bindings, dict) else {}
            for key in EXCLUSIVE_BINDINGS:
                if raw.get(key) and other_raw.get(key) == raw[key]:
                    errors.setdefault(key, []).append(f"Already bound to {other.name} ({other.slug}).")
            if queue and other.own_queue() == queue:
                errors.setdefault("celery_queue", []).append(f"{queue} is the queue of {other.name} ({other.slug}).")
        return errors

    def name_error(self) -> str | None:
        """Why the tenant may not have its name: another tenant has it, in any case (operators,
        invoices and the audit log know a tenant by its name)."""
        name = (self.name or "").strip()
        other = Tenant.objects.exclude(pk=self.pk).filter(name__iexact=name).first() if name else None
        return f"A tenant called {other.name} exists ({other.slug})." if other else None

    def clean(self):
        from tenants.entitlements import unknown_features

        if error := self.name_error():
            raise ValidationError({"name": error})
        if not isinstance(self.resource_bindings, dict):
            raise ValidationError({"resource_bindings": "An object of resource names."})
        extra = set(self.resource_bindings) - set(BINDING_KEYS)
        if extra:
            raise ValidationError({"resource_bindings": f"Unknown keys: {', '.join(sorted(extra))}"})
        errors = self.binding_errors()
        if errors:
            raise ValidationError(
                {"resource_bindings": [f"{key}: {message}" for key, messages in errors.items() for message in messages]}
            )
        for field in ("feature_grants", "feature_revocations"):
            unknown = unknown_features(getattr(self, field))
            if unknown:
                raise ValidationError({field: f"Unknown features: {', '.join(sorted(unknown))}"})


class Membership(TenantOwnedModel):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    # A signed-in user may read their own memberships in every tenant (the tenant
    # switcher); everything else about other tenants stays invisible.
    rls_extra_using = f"user_id = {rls.CURRENT_USER_ID}"

    class Meta:
        ordering = ["user__email"]
        constraints = [models.UniqueConstraint(fields=["tenant", "user"], name="membership_unique_per_tenant")]

    def __str__(self) -> str:
        return f"{self.user} in tenant {self.tenant_id} as {self.role}"

    @classmethod
    def of_user(cls, user) -> models.QuerySet[Membership]:
        """The user's memberships in every tenant: only for "which tenants am I in"."""
        return cls.unscoped.filter(user=user).select_related("tenant", "tenant__tier")


class InvitationStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    ACCEPTED = "accepted", "Accepted"
    REVOKED = "revoked", "Revoked"


def hash_invitation_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Invitation(TenantOwnedModel):
    email = models.EmailField()
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    # The link carries "<tenant id>.<secret>" with secret = HMAC(SECRET_KEY, nonce):
    # the email task can rebuild it from the row, a copy of the database alone
    # cannot, and only its hash is stored for the lookup. Resending rotates the nonce.
    nonce = models.CharField(max_length=64)
    secret_hash = models.CharField(max_length=64, unique=True)
    status = models.CharField(max_length=10, choices=InvitationStatus.choices, default=InvitationStatus.PENDING)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    expires_at = models.DateTimeField()
    sent_count = models.PositiveIntegerField(default=0)
    last_sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    accepted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # One open invitation per address per tenant; accepted/revoked ones stay as history.
            models.UniqueConstraint(
                fields=["tenant", "email"],
                condition=models.Q(status="pending"),
                name="invitation_one_pending_per_email",
            )
        ]

    def __str__(self) -> str:
        return f"Invitation of {self.email} to tenant {self.tenant_id}"

    def rotate_secret(self) -> None:
        self.nonce = secrets.token_hex(16)
        self.secret_hash = hash_invitation_secret(self.secret)

    @property
    def secret(self) -> str:
        digest = hmac.new(settings.SECRET_KEY.encode(), f"invitation:{self.nonce}".encode(), hashlib.sha256)
        return digest.hexdigest()

    @property
    def token(self) -> str:
        return f"{self.tenant_id}.{self.secret}"

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= timezone.now()

    @property
    def is_open(self) -> bool:
        return self.status == InvitationStatus.PENDING and not self.is_expired


class AuditLog(TenantOwnedModel):
    """Append-only record of every administrative action.

    Tenant-owned (tenant admins read their own), but `tenant` may be empty for
    platform actions such as editing a tier, which only operators see.
    """

    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.PROTECT, null=True, blank=True, related_name="+", db_index=True
    )
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    actor_email = models.EmailField(blank=True, help_text="Kept when the user is deleted.")
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64, blank=True)
    target_id = models.CharField(max_length=64, blank=True)
    target_repr = models.CharField(max_length=200, blank=True)
    before = models.JSONField(default=dict, blank=True)
    after = models.JSONField(default=dict, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.action} by {self.actor_email or 'system'}"

    def save(self, *args, **kwargs):
        if self.pk is not None and not kwargs.get("force_insert"):
            raise ValidationError("The audit log is append-only")
        scope = current_scope()
        if self.tenant_id is None and scope.tenant_id is None and scope.all_tenants:
            # A platform action (e.g. a tier edit): no tenant, operator scope only.
            models.Model.save(self, *args, **kwargs)
            return
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValidationError("The audit log is append-only")

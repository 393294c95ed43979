from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

from tenants.roles import Action, Role, can
from tenants.scoping import PlatformModel, TenantOwnedModel


class KeyStatus(models.TextChoices):
    ACTIVE = "active", "Active (signs new tokens)"
    RETIRING = "retiring", "Retiring (verifies tokens it signed until they expire)"
    RETIRED = "retired", "Retired (gone from the JWKS)"


class SigningKey(PlatformModel):
    """An asymmetric key the token service signs with. The private half is
    encrypted with a key derived from SECRET_KEY (see keys.py)."""

    kid = models.CharField(max_length=64, unique=True)
    algorithm = models.CharField(max_length=10, default="ES256")
    private_key_encrypted = models.TextField()
    public_jwk = models.JSONField()
    status = models.CharField(max_length=10, choices=KeyStatus.choices, default=KeyStatus.ACTIVE)
    created_at = models.DateTimeField(default=timezone.now)
    retiring_since = models.DateTimeField(null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["status"], condition=models.Q(status="active"), name="signing_key_one_active"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kid} ({self.status})"


def hash_secret(secret: str) -> str:
    # Client secrets are 256-bit random values: a fast hash is enough (nothing to brute-force).
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


class ApiClient(TenantOwnedModel):
    """A tenant's machine client: client_credentials grant with a hashed secret.

    It acts on its owner's rights (at first its creator; an admin who takes it over later):
    while the owner could not create it today — gone from the tenant, account deactivated,
    or in a role that cannot manage API clients or grant one of its scopes — the client is
    paused. Paused is read live (`with_owner_role`), like a person's token, so it starts
    and ends at once with the owner's rights.

    `credentials_generation` goes up whenever the client's credentials are replaced (a
    take-over gives it a new secret): its tokens carry the generation they were issued
    in, and validate() refuses any other, so a token issued with the old secret (or
    exchanged from one) dies with it, not when it expires."""

    name = models.CharField(max_length=100)
    client_id = models.CharField(max_length=64, unique=True)
    secret_hash = models.CharField(max_length=64)
    scopes = models.JSONField(default=list)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    credentials_generation = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.client_id})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def owner_may_hold(self, owner_role: str | None) -> bool:
        """Whether an owner in `owner_role` (None: not an active member) could create this
        client today: manage API clients, and hold every scope it has."""
        from tenants.identity.scopes import scopes_for_role

        return can(owner_role, Action.MANAGE_API_CLIENTS) and set(self.scopes) <= scopes_for_role(owner_role)

    @property
    def is_paused(self) -> bool:
        """Needs `owner_role` (with_owner_role)."""
        return self.is_active and not self.owner_may_hold(self.owner_role)

    @property
    def pause_reason(self) -> str:
        """Why the client is paused, for its admins ("" when it is not). Needs `owner_role`
        and reads `owner` (select_related it for lists)."""
        if not self.is_paused:
            return ""
        owner = self.owner
        if owner is None:
            return "Its owner's account no longer exists."
        name = owner.full_name or owner.email
        if not owner.is_active:
            return f"{name}'s account is deactivated."
        if self.owner_role is None:
            return f"{name} is no longer a member."
        from tenants.identity.scopes import format_scope, scopes_for_role

        role = Role(self.owner_role).label
        if not can(self.owner_role, Action.MANAGE_API_CLIENTS):
            return f"{name} now has the {role} role, which cannot manage API clients."
        missing = set(self.scopes) - scopes_for_role(self.owner_role)
        return f"{name} now has the {role} role, which cannot grant {format_scope(missing)}."


def with_owner_role(clients: models.QuerySet) -> models.QuerySet:
    """`clients` annotated with `owner_role`: the owner's role in the client's tenant, or None
    when they are not a member or their account is deactivated. One subquery, so checking a
    client's token costs no extra round trip.

    The subquery names the client's tenant itself (OuterRef) rather than taking the tenant
    from the context: `clients` decides which tenants are read (the scoped manager in a
    tenant's requests, `ApiClient.unscoped` in the operator console, where no tenant is
    set), and each client is judged by its owner's membership of that client's tenant,
    never of another one they also belong to."""
    from tenants.models import Membership

    role = Membership.unscoped.filter(
        tenant_id=models.OuterRef("tenant_id"), user_id=models.OuterRef("owner_id"), user__is_active=True
    ).values("role")[:1]
    return clients.annotate(owner_role=models.Subquery(role))


class AgentIdentity(PlatformModel):
    """An agent's workload identity: its own client id and secret (actor credentials).

    Platform data: a shared agent acts in many tenants. A tenant-owned agent names
    its tenant in `owner_tenant`, and only that tenant's admins may rotate it.
    Which tenants an agent may act in is AgentGrant (the may_act check).
    """

    name = models.CharField(max_length=100)
    client_id = models.CharField(max_length=64, unique=True)
    secret_hash = models.CharField(max_length=64)
    owner_tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    # The most an exchanged token acting through this agent may carry.
    allowed_scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    rotated_at = models.DateTimeField(null=True, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "agent identities"

    def __str__(self) -> str:
        return self.name

    @property
    def subject(self) -> str:
        return f"agent:{self.client_id}"

    @property
    def is_active(self) -> bool:
        return self.disabled_at is None


class AgentGrant(TenantOwnedModel):
    """The tenant allows this agent to act on behalf of its users."""

    agent = models.ForeignKey(AgentIdentity, on_delete=models.CASCADE, related_name="grants")
    granted_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "agent"], name="agent_grant_unique")]

    def __str__(self) -> str:
        return f"{self.agent} may act in tenant {self.tenant_id}"


# Just-in-time provisioning never makes an owner: ownership is handed over by a person.
SSO_DEFAULT_ROLES = [(role.value, role.label) for role in Role if role != Role.OWNER]


class SSOConnection(PlatformModel):
    """A tenant's enterprise single sign-on (OpenID Connect) with its own IdP.

    Platform data, not tenant-owned: sign-in finds it by email domain before any
    tenant is known. Each row is mirrored into an allauth SocialApp (provider
    "openid_connect", provider_id = `provider_id`) by tenants.identity.sso; the
    client secret lives only here, encrypted, and never in the SocialApp.
    """

    tenant = models.OneToOneField("tenants.Tenant", on_delete=models.CASCADE, related_name="sso_connection")
    # allauth's SocialApp.provider_id and the key of the callback URL the IdP knows;
    # fixed at creation so the redirect URI registered at the IdP never changes.
    provider_id = models.CharField(max_length=64, unique=True)
    issuer = models.URLField(max_length=500)
    client_id = models.CharField(max_length=255)
    client_secret_encrypted = models.TextField()
    secret_updated_at = models.DateTimeField(default=timezone.now)
    default_role = models.CharField(max_length=10, choices=SSO_DEFAULT_ROLES, default=Role.MEMBER)
    enforced = models.BooleanField(default=False, help_text="Password sign-in is refused for the claimed domains.")
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "SSO connection"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(default_role__in=[value for value, _ in SSO_DEFAULT_ROLES]),
                name="sso_default_role_not_owner",
            )
        ]

    def __str__(self) -> str:
        return f"SSO of tenant {self.tenant_id} ({self.issuer})"


def _verification_token() -> str:
    return secrets.token_urlsafe(24)


class SSODomain(PlatformModel):
    """An email domain a tenant's SSO connection claims; trusted once verified, by one tenant only."""

    connection = models.ForeignKey(SSOConnection, on_delete=models.CASCADE, related_name="domains")
    domain = models.CharField(max_length=253, db_index=True)
    # Proof of control: a DNS TXT record `_tenant-portal-challenge.<domain>` holding
    # `tenant-portal-verification=<token>`. Until then the claim routes no sign-in and the
    # tenant's IdP is trusted for none of the domain's addresses (tenants.identity.sso).
    verification_token = models.CharField(max_length=64, default=_verification_token, editable=False)
    verified_at = models.DateTimeField(null=True, blank=True)
    verified_by = models.CharField(max_length=10, blank=True, help_text="dns, or operator (checked by hand)")

    class Meta:
        ordering = ["domain"]
        verbose_name = "SSO domain"
        constraints = [
            models.UniqueConstraint(fields=["connection", "domain"], name="sso_domain_once_per_connection"),
            # Several tenants may *claim* a domain (a squatter cannot lock its owner out);
            # only one can prove it, and that proof removes the other claims.
            models.UniqueConstraint(
                fields=["domain"], condition=models.Q(verified_at__isnull=False), name="sso_domain_verified_once"
            ),
        ]

    @property
    def is_verified(self) -> bool:
        return self.verified_at is not None

    def __str__(self) -> str:
        return self.domain


class OperatorToken(PlatformModel):
    """A staff member's personal token for the operator API (/api/v1/operator/…), for the
    automation an operator runs (a nightly billing export, catalogue publishing from CI).

    Platform data, not a tenant's: it speaks for its owner across tenants, as the owner's
    console session does, narrowed to `scopes` (tenants.identity.operator_tokens.SCOPES).
    It lives beside ApiClient and AgentIdentity because the identity room owns every
    credential and how its secret is kept. Only a SHA-256 digest of the token is stored;
    `key_id` is the token's public part (tpo_<key_id>_<secret>), to find the row, and the
    digest is compared in constant time. It works while it is neither revoked nor expired
    AND its owner is still an active staff member, read live on every request."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=100)
    key_id = models.CharField(max_length=16, unique=True)
    token_hash = models.CharField(max_length=64)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} (tpo_{self.key_id}…)"

    @property
    def prefix(self) -> str:
        """What the token starts with: enough to recognise it, nothing to use."""
        return f"tpo_{self.key_id}"

    @property
    def is_expired(self) -> bool:
        return self.expires_at <= timezone.now()

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.is_expired else "active"

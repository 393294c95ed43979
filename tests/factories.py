"""Test data builders. Every fixture has two tenants so cross-tenant cases are cheap."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.utils import timezone

from tenants.context import tenant_context
from tenants.models import DeploymentModel, Invitation, Membership, Tenant, Tier, User
from tenants.roles import Role

PASSWORD = "correct-horse-battery-staple"
_seq = itertools.count(1)


def make_user(email: str | None = None, *, address_proven: bool = True, **extra) -> User:
    """An account as the product makes them: its address proven (by the invitation link or an
    IdP) unless `address_proven=False`, an account whose address nobody confirmed."""
    from tenants.services import record_proven_address

    email = email or f"user{next(_seq)}@example.test"
    user = User.objects.create_user(email=email, password=PASSWORD, full_name=extra.pop("full_name", ""), **extra)
    if address_proven:
        record_proven_address(user, user.email)
    return user


def make_tier(slug: str | None = None, **extra) -> Tier:
    slug = slug or f"tier-{next(_seq)}"
    defaults = {
        "name": slug.title(),
        "monthly_price": Decimal("100.00"),
        "included_tokens": 1000,
        "default_features": ["chat"],
        "celery_queue": f"tier-{slug}",
    }
    defaults.update(extra)
    return Tier.objects.create(slug=slug, **defaults)


# When factory tenants were onboarded: long before any month a test bills, so their months are
# billed whole. A tenant onboarded during a month pays for it from then (billing.invoices.tier_periods);
# pass `created_at=` to make one.
ONBOARDED_LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)


def make_tenant(slug: str | None = None, tier: Tier | None = None, **extra) -> Tenant:
    slug = slug or f"tenant-{next(_seq)}"
    created_at = extra.pop("created_at", ONBOARDED_LONG_AGO)
    tenant = Tenant.objects.create(
        slug=slug,
        name=extra.pop("name", slug.title()),
        tier=tier or make_tier(),
        deployment_model=extra.pop("deployment_model", DeploymentModel.POOL),
        **extra,
    )
    # created_at is set on insert (auto_now_add), so the onboarding moment is written after it.
    Tenant.objects.filter(pk=tenant.pk).update(created_at=created_at)
    tenant.created_at = created_at
    return tenant


def add_member(tenant: Tenant, user: User | None = None, role: str = Role.MEMBER) -> Membership:
    user = user or make_user()
    with tenant_context(tenant):
        return Membership.objects.create(user=user, role=role)


def make_invitation(tenant: Tenant, email: str, role: str = Role.MEMBER, invited_by: User | None = None, **extra):
    with tenant_context(tenant):
        invitation = Invitation(
            email=email,
            role=role,
            invited_by=invited_by,
            expires_at=extra.pop("expires_at", timezone.now() + timedelta(days=7)),
            **extra,
        )
        invitation.rotate_secret()
        invitation.save()
        return invitation


@dataclass
class Side:
    """One tenant and its people."""

    tenant: Tenant
    owner: User
    admin: User
    member: User
    billing: User
    memberships: dict[str, Membership] = field(default_factory=dict)

    def user(self, role: str) -> User:
        return {"owner": self.owner, "admin": self.admin, "member": self.member, "billing": self.billing}[role]


@dataclass
class World:
    a: Side
    b: Side
    outsider: User  # signed in, member of nothing

    @classmethod
    def build(cls) -> World:
        tier = make_tier("standard-test", default_features=["chat", "api_access"])
        sides = []
        for slug in ("alpha", "bravo"):
            tenant = make_tenant(slug, tier=tier, name=f"{slug.title()} Inc")
            people = {
                role: make_user(f"{role}@{slug}.test", full_name=f"{slug.title()} {role.title()}")
                for role in ("owner", "admin", "member", "billing")
            }
            side = Side(tenant=tenant, **people)
            for role, user in people.items():
                side.memberships[role] = add_member(tenant, user, role)
            sides.append(side)
        return cls(a=sides[0], b=sides[1], outsider=make_user("outsider@nowhere.test"))


def client_token(tenant: Tenant, owner: User, scopes, name: str = "Robot") -> str:
    """An access token of an API client of `tenant` owned by `owner` (an owner or admin)
    holding `scopes`, as the token endpoint's client_credentials grant issues it. The
    client row is written directly: a test may give it scopes the API clients page no
    longer offers (a client created before), to check what the API does with them."""
    import secrets

    from tenants.identity import oauth, tokens
    from tenants.identity.models import ApiClient, hash_secret

    with tenant_context(tenant):
        client = ApiClient.objects.create(
            name=name,
            client_id=oauth.api_client_id(tenant, secrets.token_hex(8)),
            secret_hash=hash_secret(secrets.token_urlsafe(16)),
            scopes=sorted(scopes),
            created_by=owner,
            owner=owner,
        )
    client.tenant = tenant
    return tokens.issue_client_token(client, frozenset(scopes))

"""Seed the demo: an operator, three tiers and three tenants with users.

Idempotent: every object is looked up by its natural key first, so a second
run keeps what is there (including changes made in the UI) and adds nothing.
"""

from __future__ import annotations

from decimal import Decimal

from django.core.management.base import BaseCommand
from django.db import transaction

from tenants import audit
from tenants.context import tenant_context
from tenants.models import DeploymentModel, Membership, Tenant, Tier, User
from tenants.roles import Role

DEMO_PASSWORD = "demo-pass-2026"

TIERS = [
    {
        "slug": "basic",
        "name": "Basic",
        "description": "Shared everything; for small teams getting started.",
        "monthly_price": Decimal("49.00"),
        "included_tokens": 1_000_000,
        "overage_price_per_1k_tokens": Decimal("0.004"),
        "requests_per_minute": 30,
        "tokens_per_minute": 40_000,
        "concurrent_sessions": 3,
        "knowledge_storage_mb": 100,
        "allowed_models": ["offline-small"],
        "default_features": ["chat"],
        "celery_queue": "tier-basic",
    },
    {
        "slug": "standard",
        "name": "Standard",
        "description": "Knowledge bases, API access and tenant guardrails.",
        "monthly_price": Decimal("499.00"),
        "included_tokens": 20_000_000,
        "overage_price_per_1k_tokens": Decimal("0.003"),
        "requests_per_minute": 120,
        "tokens_per_minute": 200_000,
        "concurrent_sessions": 20,
        "knowledge_storage_mb": 2_048,
        "allowed_models": ["offline-small", "anthropic.claude-3-5-haiku-20241022-v1:0"],
        "default_features": ["chat", "api_access", "knowledge_bases", "custom_guardrails", "tools", "memory"],
        "celery_queue": "tier-standard",
    },
    {
        "slug": "premium",
        "name": "Premium",
        "description": "Dedicated runtime, SSO, fine-tuned models and priority support.",
        "monthly_price": Decimal("4900.00"),
        "included_tokens": 250_000_000,
        "overage_price_per_1k_tokens": Decimal("0.002"),
        "requests_per_minute": 600,
        "tokens_per_minute": 2_000_000,
        "concurrent_sessions": 200,
        "knowledge_storage_mb": 20_480,
        "allowed_models": [
            "offline-small",
            "anthropic.claude-3-5-haiku-20241022-v1:0",
            "anthropic.claude-3-7-sonnet-20250219-v1:0",
        ],
        "default_features": [
            "chat",
            "api_access",
            "knowledge_bases",
            "custom_guardrails",
            "tools",
            "memory",
            "sso",
            "audit_export",
            "fine_tuned_models",
            "dedicated_runtime",
            "priority_support",
        ],
        "celery_queue": "tier-premium",
    },
]

TENANTS = [
    ("acme", "Acme Corporation", "basic", DeploymentModel.POOL, "us-east-1", {}),
    ("globex", "Globex", "standard", DeploymentModel.BRIDGE, "eu-west-1", {}),
    (
        "initech",
        "Initech",
        "premium",
        DeploymentModel.SILO,
        "us-west-2",
        {
            "runtime_arn": "arn:aws:bedrock-agentcore:us-west-2:123456789012:runtime/initech_agent-Xy12Ab34Cd",
            "memory_id": "initech_memory-0a1b2c3d4e",
            "knowledge_base_id": "INITECHKB1",
            "knowledge_data_source_id": "INITECHDS1",
            "gateway_id": "initech-tools-0a1b2c3d4e",
            "iam_role_arn": "arn:aws:iam::123456789012:role/initech-agent-runtime",
            "celery_queue": "tenant-initech",
        },
    ),
]

OPERATOR_EMAIL = "operator@portal.example"


def demo_users(slug: str) -> list[tuple[str, str, str]]:
    return [
        (f"owner@{slug}.example", f"{slug.title()} Owner", Role.OWNER),
        (f"admin@{slug}.example", f"{slug.title()} Admin", Role.ADMIN),
        (f"member1@{slug}.example", f"{slug.title()} Member One", Role.MEMBER),
        (f"member2@{slug}.example", f"{slug.title()} Member Two", Role.MEMBER),
    ]


class Command(BaseCommand):
    help = "Create the demo operator, tiers, tenants and users (idempotent)."

    def _user(self, email: str, full_name: str, **extra) -> tuple[User, bool]:
        user = User.objects.filter(email=email).first()
        if user is not None:
            return user, False
        return User.objects.create_user(email=email, password=DEMO_PASSWORD, full_name=full_name, **extra), True

    def handle(self, *args, **options):
        created = self._seed()
        # After the commit: each demo conversation's turns commit as the product commits them.
        from agents.demo_conversations import seed_conversations  # ordinary chats, as real turns

        created += seed_conversations()
        self.stdout.write(f"demo data ready ({created} objects created)")

    @transaction.atomic
    def _seed(self) -> int:
        created = 0
        # What the seed creates is recorded in the audit log as its people would have done it
        # (only when created: running the seed again adds nothing).
        operator, new = self._user(OPERATOR_EMAIL, "Olivia Operator", is_staff=True, is_superuser=True)
        created += new
        tiers = {}
        for spec in TIERS:
            tier, new = Tier.objects.get_or_create(slug=spec["slug"], defaults=spec)
            tiers[tier.slug] = tier
            created += new
        for slug, name, tier_slug, model, region, bindings in TENANTS:
            tenant, new = Tenant.objects.get_or_create(
                slug=slug,
                defaults={
                    "name": name,
                    "tier": tiers[tier_slug],
                    "deployment_model": model,
                    "region": region,
                    "resource_bindings": bindings,
                },
            )
            created += new
            if new:
                # Onboarded before the demo's usage: a tenant onboarded during a month pays for it
                # from then (billing.invoices.tier_periods), and the demo's months are whole.
                Tenant.objects.filter(pk=tenant.pk).update(created_at=_onboarded_at())
            with tenant_context(tenant):
                if new:
                    audit.record(
                        "tenant.created",
                        actor=operator,
                        tenant=tenant,
                        target=tenant,
                        after={"tier": tier_slug, "deployment_model": model, "region": region},
                    )
                for email, full_name, role in demo_users(slug):
                    user, new = self._user(email, full_name)
                    created += new
                    membership, new = Membership.objects.get_or_create(user=user, defaults={"role": role})
                    created += new
                    if new:
                        audit.record(
                            "membership.created",
                            actor=user,
                            tenant=tenant,
                            target=membership,
                            target_repr=user.email,
                            after={"role": role, "via": "demo seed"},
                        )
        from agents.seed import seed_catalogue

        created += seed_catalogue()
        from agents.tools.seed import seed_tools  # the tool registry and each demo agent's tools

        created += seed_tools()
        from agents.skills.seed import seed_skills  # a shared refund skill and Globex's bridged one

        created += seed_skills()
        from agents.knowledge.seed import seed_knowledge  # demo documents per entitled tenant

        created += seed_knowledge()
        from billing.seed import seed_usage  # a month of usage, roll-ups and invoice drafts

        created += seed_usage()
        from agents.guardrails.seed import seed_guardrails  # tier defaults, canaries, demo events

        created += seed_guardrails()
        from agents.memory.seed import seed_memory  # a few facts demo members asked agents to keep

        created += seed_memory()
        return created


def _onboarded_at():
    """The first instant of the month the demo's usage (billing.seed.DAYS) starts in."""
    import datetime as dt

    from django.utils import timezone

    from billing import seed
    from billing.accounting import month_start

    first_day = month_start(timezone.now() - dt.timedelta(days=seed.DAYS))
    return dt.datetime.combine(first_day, dt.time.min, tzinfo=dt.UTC)

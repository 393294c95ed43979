"""The bench's own data: one tenant on a tier with limits no benchmark reaches, members,
an offline model, a shared agent with a workload identity the tenant allows, and
conversations to post into. Written with the ORM in the measurement process, after
`migrate`, into the measurement's own database."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from decimal import Decimal

from tests.bench.common import BENCH_QUEUE, BENCH_TENANT


@dataclass
class BenchWorld:
    tenant: object
    agent: object
    users: list
    memberships: list
    conversations: list  # conversations[i] belongs to users[i % len(users)]

    def actors(self) -> dict:
        """user id → the Actor a request of that member would carry."""
        from tenants.services import Actor

        return {m.user_id: Actor(user=u, membership=m) for u, m in zip(self.users, self.memberships, strict=True)}

    def token(self, user, lifetime: int = 3600) -> str:
        from tenants.identity import tokens

        return tokens.issue_user_token(user, self.tenant, lifetime=lifetime)


def create(users: int, conversations: int) -> BenchWorld:
    from agents.models import Agent, AgentStatus, Conversation, ModelOffering, Provider
    from tenants.context import all_tenants, tenant_context
    from tenants.identity.models import AgentGrant, AgentIdentity, hash_secret, new_secret
    from tenants.models import DeploymentModel, Membership, Tenant, Tier, User
    from tenants.roles import Role

    tier = Tier.objects.create(
        slug="bench",
        name="Bench",
        monthly_price=Decimal("0"),
        included_tokens=10**12,
        requests_per_minute=10**6,
        tokens_per_minute=10**9,
        concurrent_sessions=10**5,
        allowed_models=["offline-small"],
        default_features=["chat", "api_access"],
        celery_queue=BENCH_QUEUE,
    )
    tenant = Tenant.objects.create(
        slug=BENCH_TENANT, name="Bench Inc", tier=tier, deployment_model=DeploymentModel.POOL, region="us-east-1"
    )
    with all_tenants("bench: the shared catalogue"):
        offering = ModelOffering.unscoped.create(
            key="offline-small",
            name="Offline model",
            provider=Provider.OFFLINE,
            model_id="offline-small",
            price_per_1k_input=Decimal("0.000100"),
            price_per_1k_output=Decimal("0.000200"),
        )
        identity = AgentIdentity.objects.create(
            name="Bench agent",
            client_id=f"agt_{secrets.token_hex(10)}",
            secret_hash=hash_secret(new_secret()),
            allowed_scopes=["agents:invoke", "kb:read", "tenant:read"],
        )
        agent = Agent.unscoped.create(
            slug="bench-helpdesk",
            name="Bench helpdesk",
            description="Answers at once (the bench's fake runtime).",
            instructions="Be brief.",
            model=offering,
            offered_to_tiers=[tier.slug],
            status=AgentStatus.PUBLISHED,
            identity=identity,
        )
    people = [User.objects.create_user(email=f"bench{i}@bench.test", password=None) for i in range(users)]
    with tenant_context(tenant):
        AgentGrant.objects.create(agent=identity)
        memberships = [Membership.objects.create(user=user, role=Role.MEMBER) for user in people]
        chats = [Conversation.objects.create(user=people[i % users], agent=agent) for i in range(conversations)]
    tenant = Tenant.objects.select_related("tier").get(pk=tenant.pk)
    return BenchWorld(tenant=tenant, agent=agent, users=people, memberships=memberships, conversations=chats)

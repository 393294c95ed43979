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


def create(users: int, conversations: int, history: int = 2000) -> BenchWorld:
    """The bench tenant, its members and conversations, and `history` finished turns of
    earlier conversations (messages, invocations, usage events, settled reservations):
    a tenant that has been in use, so that tables have the sizes and statistics the
    planner sees in a live database, not those of an empty one (common.analyze)."""
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
        _history(tenant, agent, people, history)
    tenant = Tenant.objects.select_related("tier").get(pk=tenant.pk)
    return BenchWorld(tenant=tenant, agent=agent, users=people, memberships=memberships, conversations=chats)


def _history(tenant, agent, people, turns: int, per_conversation: int = 10) -> None:
    """`turns` finished turns in conversations of their own, written in bulk."""
    import datetime as dt
    import uuid

    from django.utils import timezone

    from agents.models import Conversation, Invocation, Message, MessageStatus
    from billing.models import Reservation, ReservationStatus, UsageEvent

    if turns <= 0:
        return
    start = timezone.now() - dt.timedelta(days=20)
    conversations = Conversation.objects.bulk_create(
        Conversation(
            user=people[i % len(people)],
            agent=agent,
            title=f"Earlier chat {i}",
            tenant=tenant,
            runtime_session_id=f"conv-{uuid.uuid4().hex}-bench",  # save() would make one; bulk_create does not
        )
        for i in range((turns + per_conversation - 1) // per_conversation)
    )
    pairs = []
    for n in range(turns):
        conversation = conversations[n // per_conversation]
        at = start + dt.timedelta(seconds=30 * n)
        pairs.append(
            (
                Message(
                    conversation=conversation,
                    role="user",
                    content=f"Earlier question {n}?",
                    status="done",
                    created_at=at,
                    tenant=tenant,
                ),
                Message(
                    conversation=conversation,
                    role="assistant",
                    content="An earlier answer. " * 8,
                    status="done",
                    created_at=at + dt.timedelta(seconds=2),
                    tenant=tenant,
                ),
            )
        )
    Message.objects.bulk_create([m for pair in pairs for m in pair], batch_size=1000)
    invocations = [
        Invocation(
            id=uuid.uuid4(),
            tenant=tenant,
            conversation=question.conversation,
            user=question.conversation.user,
            agent=agent,
            user_message=question,
            assistant_message=answer,
            status=MessageStatus.DONE,
            queue=BENCH_QUEUE,
            model_key="offline-small",
            model_id="offline-small",
            runtime="http",
            queued_at=question.created_at,
            started_at=question.created_at,
            finished_at=answer.created_at,
            input_tokens=40,
            output_tokens=60,
            attempts=1,
        )
        for question, answer in pairs
    ]
    Invocation.objects.bulk_create(invocations, batch_size=1000)
    UsageEvent.objects.bulk_create(
        (
            UsageEvent(
                tenant=tenant,
                invocation_id=i.id,
                user=i.user,
                agent_slug=agent.slug,
                model_key=i.model_key,
                outcome="done",
                input_tokens=40,
                output_tokens=60,
                cost=Decimal("0.000016"),
                created_at=i.finished_at,
            )
            for i in invocations
        ),
        batch_size=1000,
    )
    Reservation.objects.bulk_create(
        (
            Reservation(
                tenant=tenant,
                invocation_id=i.id,
                month=i.queued_at.date().replace(day=1),
                user_key=i.user_id,
                tokens=100,
                cost=Decimal("0.00002"),
                status=ReservationStatus.SETTLED,
                created_at=i.queued_at,
                closed_at=i.finished_at,
            )
            for i in invocations
        ),
        batch_size=1000,
    )

"""Demo catalogue: model offerings, shared agents with workload identities, a
silo tenant's own agent and fine-tuned model. Idempotent (looked up by key/slug)."""

from __future__ import annotations

from decimal import Decimal

from agents.models import Agent, AgentStatus, ModelOffering, Provider
from tenants.context import all_tenants, tenant_context
from tenants.identity.models import AgentGrant, AgentIdentity, hash_secret, new_secret
from tenants.models import Tenant

OFFERINGS = [
    ("offline-small", "Offline model", Provider.OFFLINE, "offline-small", "0.000100", "0.000200", 8192),
    (
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        "Claude 3.5 Haiku (Bedrock)",
        Provider.BEDROCK,
        "us.anthropic.claude-3-5-haiku-20241022-v1:0",
        "0.000800",
        "0.004000",
        200_000,
    ),
    (
        "anthropic.claude-3-7-sonnet-20250219-v1:0",
        "Claude 3.7 Sonnet (Bedrock)",
        Provider.BEDROCK,
        "us.anthropic.claude-3-7-sonnet-20250219-v1:0",
        "0.003000",
        "0.015000",
        200_000,
    ),
]

SHARED_AGENTS = [
    (
        "helpdesk",
        "Helpdesk",
        "Answers questions about your organisation's policies and products.",
        "You are a concise, friendly helpdesk agent. Cite your sources.",
        "offline-small",
        ["basic", "standard", "premium"],
    ),
    (
        "analyst",
        "Analyst",
        "Summarises documents and drafts reports.",
        "You are a careful analyst. Prefer bullet points and say what you are unsure about.",
        "anthropic.claude-3-7-sonnet-20250219-v1:0",
        ["standard", "premium"],
    ),
]


def _identity(name: str, owner: Tenant | None) -> AgentIdentity:
    import secrets

    # The demo never prints these secrets; operators rotate to get one.
    return AgentIdentity.objects.create(
        name=name,
        client_id=f"agt_{secrets.token_hex(10)}",
        secret_hash=hash_secret(new_secret()),
        owner_tenant=owner,
        allowed_scopes=["agents:invoke", "kb:read", "tenant:read", "memory:read", "memory:write"],
    )


def seed_catalogue() -> int:
    created = 0
    with all_tenants("demo seed"):
        offerings = {}
        for key, name, provider, model_id, p_in, p_out, window in OFFERINGS:
            offering, new = ModelOffering.unscoped.get_or_create(
                key=key,
                defaults={
                    "name": name,
                    "provider": provider,
                    "model_id": model_id,
                    "price_per_1k_input": Decimal(p_in),
                    "price_per_1k_output": Decimal(p_out),
                    "context_window": window,
                },
            )
            offerings[key] = offering
            created += new
        for slug, name, description, instructions, model_key, tiers in SHARED_AGENTS:
            agent = Agent.unscoped.filter(slug=slug, owner_tenant__isnull=True).first()
            if agent is None:
                Agent.unscoped.create(
                    slug=slug,
                    name=name,
                    description=description,
                    instructions=instructions,
                    model=offerings[model_key],
                    offered_to_tiers=tiers,
                    status=AgentStatus.PUBLISHED,
                    identity=_identity(f"{name} (shared)", None),
                )
                created += 1
        initech = Tenant.objects.filter(slug="initech").first()
        if initech is not None:
            if not ModelOffering.unscoped.filter(key="initech-sonnet-ft").exists():
                ModelOffering.unscoped.create(
                    key="initech-sonnet-ft",
                    name="Initech fine-tuned Sonnet",
                    provider=Provider.BEDROCK,
                    model_id="arn:aws:bedrock:us-west-2:123456789012:custom-model/initech-sonnet-ft",
                    price_per_1k_input=Decimal("0.004000"),
                    price_per_1k_output=Decimal("0.018000"),
                    context_window=200_000,
                    base=offerings["anthropic.claude-3-7-sonnet-20250219-v1:0"],
                    owner_tenant=initech,
                )
                created += 1
            if not Agent.unscoped.filter(slug="tps-reports", owner_tenant=initech).exists():
                Agent.unscoped.create(
                    slug="tps-reports",
                    name="TPS report assistant",
                    description="Initech's own agent for TPS reports.",
                    instructions="Always remind people about the new cover sheets.",
                    model=offerings["anthropic.claude-3-7-sonnet-20250219-v1:0"],
                    status=AgentStatus.PUBLISHED,
                    owner_tenant=initech,
                    identity=_identity("TPS report assistant", initech),
                )
                created += 1
    # Every demo tenant allows the agents it is offered.
    for tenant in Tenant.objects.select_related("tier"):
        with tenant_context(tenant):
            for agent in Agent.objects.filter(status=AgentStatus.PUBLISHED, identity__isnull=False):
                if agent.owner_tenant_id is None and tenant.tier.slug not in agent.offered_to_tiers:
                    continue
                _, new = AgentGrant.objects.get_or_create(agent_id=agent.identity_id)
                created += new
    from agents.registry.seed import seed_versions  # each agent's approved version 1, a review waiting

    created += seed_versions()
    return created

"""Demo skills: a shared "Handle a refund request" skill for the standard and premium tiers,
and Globex's own refund approval steps bridged onto it (the bridge model: the shared common
steps, then Globex's), followed by Globex's helpdesk. Idempotent: looked up by key, and the
helpdesk's skills are chosen only when it has none (a choice made in the UI stays)."""

from __future__ import annotations

from agents.skills.models import AgentSkill, Skill, SkillStatus
from tenants.context import all_tenants, tenant_context
from tenants.models import Tenant

SHARED_REFUND = {
    "key": "refund-request",
    "name": "Handle a refund request",
    "description": "The customer asks for money back for an order, a subscription or a charge.",
    "instructions": (
        "1. Confirm who is asking: the account and the order, subscription or charge concerned.\n"
        "2. Restate the request in one sentence and ask for anything missing (amount, date, reason).\n"
        "3. Never promise a refund yourself; say who decides and how long it usually takes.\n"
        "4. Log the request: summarise it so a person can act without asking again."
    ),
    "tiers": ["standard", "premium"],
}
GLOBEX_REFUND = {
    "key": "globex-refund-approval",
    "name": "Globex refund approval",
    "description": "A Globex customer asks for a refund.",
    "instructions": (
        "- Refunds up to 100 EUR: tell the customer the support team approves them within one working day.\n"
        "- Above 100 EUR: finance approves; ask for the invoice number and tell the customer to expect "
        "an answer within three working days.\n"
        "- Refunds of annual plans after 30 days are pro rata: say so before anything else."
    ),
}


def seed_skills() -> int:
    created = 0
    with all_tenants("demo seed: the shared skills"):
        shared, new = Skill.unscoped.get_or_create(
            owner_tenant=None,
            key=SHARED_REFUND["key"],
            defaults={**SHARED_REFUND, "status": SkillStatus.ACTIVE},
        )
        created += new
    globex = Tenant.objects.filter(slug="globex").first()
    if globex is None:
        return created
    from agents.services import agents_for_members

    with tenant_context(globex):
        own, new = Skill.objects.get_or_create(
            owner_tenant=globex,
            key=GLOBEX_REFUND["key"],
            defaults={**GLOBEX_REFUND, "status": SkillStatus.ACTIVE, "extends": shared},
        )
        created += new
        helpdesk = next((a for a in agents_for_members(globex) if a.slug == "helpdesk"), None)
        if helpdesk is not None and not AgentSkill.objects.filter(agent=helpdesk).exists():
            AgentSkill.objects.create(agent=helpdesk, skill=own)
            created += 1
    return created

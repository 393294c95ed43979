"""The offline model's templated answer, end to end through the portal and the local runtime:
it never shows the agent's instructions, and it suggests a knowledge base only to a tenant
whose plan has knowledge bases (the runtime reads that from the tenant headers)."""

from __future__ import annotations

import pytest

from agents.models import Agent, Message
from tenants.context import all_tenants, tenant_context
from tests.agents.test_chat import post, signed_in_as, start

pytestmark = pytest.mark.django_db(transaction=False)

INSTRUCTIONS = "You are a concise, friendly helpdesk agent. Internal: escalate VIP customers to Dana."
KB_ADVICE = "An administrator can add documents to a knowledge base this agent uses"


def _answer(client, world, catalogue, capture) -> str:
    with all_tenants("test: confidential instructions"):
        Agent.unscoped.filter(pk=catalogue.helpdesk.pk).update(instructions=INSTRUCTIONS)
    signed_in_as(client, world.a.member)
    conversation = start(client, world.a, catalogue.helpdesk)
    assert post(client, world.a, conversation, "Can you help me with my account?", capture).status_code == 202
    with tenant_context(world.a.tenant):
        answer = Message.objects.get(conversation=conversation, role="assistant")
    assert answer.status == "done", answer.error
    return answer.content


@pytest.mark.parametrize("plan_has_knowledge_bases", [False, True], ids=["basic", "with-knowledge-bases"])
def test_the_offline_answer_keeps_instructions_private_and_advises_only_what_the_plan_allows(
    client, world, catalogue, eager, django_capture_on_commit_callbacks, plan_has_knowledge_bases
):
    tier = world.a.tenant.tier
    tier.default_features = ["chat", "knowledge_bases"] if plan_has_knowledge_bases else ["chat"]
    tier.save(update_fields=["default_features"])

    content = _answer(client, world, catalogue, django_capture_on_commit_callbacks)

    assert content.startswith("[Offline model] No sources were provided")
    assert 'You asked: "Can you help me with my account?"' in content
    assert "Helpdesk is answering with the offline model" in content
    assert "instructed" not in content
    assert "concise, friendly" not in content and "Dana" not in content
    assert (KB_ADVICE in content) is plan_has_knowledge_bases
    assert ("knowledge base" in content) is plan_has_knowledge_bases

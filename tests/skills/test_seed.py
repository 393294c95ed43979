"""The demo seed: a shared refund skill for standard and premium, and Globex's own refund
approval bridged onto it and followed by its helpdesk, once."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from agents.models import Agent
from agents.skills import services
from agents.skills.models import AgentSkill, Skill
from tenants.context import all_tenants, tenant_context
from tenants.models import Tenant


def skill_rows():
    with all_tenants("test: every skill row"):
        return sorted(Skill.unscoped.values_list("key", "owner_tenant__slug", "extends__key")), sorted(
            AgentSkill.unscoped.values_list("tenant__slug", "agent__slug", "skill__key")
        )


@pytest.mark.django_db
def test_globex_helpdesk_follows_its_bridged_refund_skill_and_a_second_run_adds_nothing(settings, tmp_path):
    settings.KNOWLEDGE_FILES_DIR = tmp_path
    call_command("seed_demo", verbosity=0)
    rows = skill_rows()
    assert rows == (
        [("globex-refund-approval", "globex", "refund-request"), ("refund-request", None, None)],
        [("globex", "helpdesk", "globex-refund-approval")],
    )
    globex = Tenant.objects.get(slug="globex")
    with tenant_context(globex):
        helpdesk = Agent.objects.get(slug="helpdesk")
        (skill,) = services.skills_for_turn(globex, helpdesk)
    assert skill["instructions"].index("Confirm who is asking") < skill["instructions"].index("### Globex's steps")
    call_command("seed_demo", verbosity=0)
    assert skill_rows() == rows

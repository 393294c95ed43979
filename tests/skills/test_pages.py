"""The skills screens: every member sees them, owners and admins change them, operators
keep the shared skills; bad input is a form error, never a 500."""

from __future__ import annotations

import pytest

from agents.skills.models import AgentSkill, Skill
from tenants.context import all_tenants, tenant_context
from tests.agents.helpers import make_catalogue
from tests.skills.helpers import attach, own_skill, shared_skill


@pytest.fixture
def scene(world):
    catalogue = make_catalogue(world.a.tenant, world.b.tenant)
    shared = shared_skill(world.a.tenant.tier)
    mine = own_skill(world.a, extends=shared)
    attach(world.a, catalogue.helpdesk, mine)
    return {"catalogue": catalogue, "shared": shared, "mine": mine}


@pytest.mark.parametrize("role", ["owner", "admin", "member"])
def test_it_shows_the_skills_page_to_every_member(client, world, scene, role):
    client.force_login(world.a.user(role))
    page = client.get("/t/alpha/skills/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Handle a refund request" in html and "Alpha Inc refunds" in html
    assert ("New skill" in html) is (role != "member")


def test_a_member_may_not_change_anything(client, world, scene):
    client.force_login(world.a.member)
    agent = scene["catalogue"].helpdesk
    assert client.post(f"/t/alpha/skills/agents/{agent.pk}/", {"skills": []}).status_code == 403
    assert client.get("/t/alpha/skills/new/").status_code == 403
    assert client.post(f"/t/alpha/skills/{scene['mine'].pk}/", {"name": "x"}).status_code == 403
    with tenant_context(world.a.tenant):
        assert AgentSkill.objects.count() == 1


def test_an_admin_creates_a_bridged_skill(client, world, scene):
    client.force_login(world.a.admin)
    response = client.post(
        "/t/alpha/skills/new/",
        {
            "key": "vip",
            "name": "VIP refunds",
            "description": "A VIP customer",
            "instructions": "Call the account manager.",
            "status": "active",
            "extends": scene["shared"].pk,
        },
    )
    assert response.status_code == 302
    with tenant_context(world.a.tenant):
        skill = Skill.objects.get(key="vip")
    assert skill.owner_tenant_id == world.a.tenant.pk and skill.extends_id == scene["shared"].pk


@pytest.mark.parametrize(
    "data",
    [
        {"key": "bad key!", "name": "N", "description": "d", "instructions": "i", "status": "active"},
        {"key": "own-refund", "name": "Dup", "description": "d", "instructions": "i", "status": "active"},
        {"key": "k", "name": "N", "description": "d", "instructions": "x" * 9000, "status": "active"},
        {"key": "k", "name": "N", "description": "d", "instructions": "i", "status": "active", "extends": "99999"},
        {"key": "k", "name": "N", "description": "d", "instructions": "i", "status": "nope"},
    ],
)
def test_bad_input_is_a_form_error(client, world, scene, data):
    client.force_login(world.a.admin)
    response = client.post("/t/alpha/skills/new/", data)
    assert response.status_code == 400
    with tenant_context(world.a.tenant):
        assert Skill.objects.filter(owner_tenant=world.a.tenant).count() == 1


def test_an_admin_attaches_skills_and_cannot_attach_another_tenants(client, world, scene):
    theirs = own_skill(world.b, key="bravo-own")
    client.force_login(world.a.admin)
    agent = scene["catalogue"].helpdesk
    client.post(f"/t/alpha/skills/agents/{agent.pk}/", {"skills": [theirs.pk]})
    client.post(f"/t/alpha/skills/agents/{agent.pk}/", {"skills": [scene["shared"].pk]})
    with tenant_context(world.a.tenant):
        assert list(AgentSkill.objects.values_list("skill_id", flat=True)) == [scene["shared"].pk]


def test_another_tenants_skill_cannot_be_edited(client, world, scene):
    theirs = own_skill(world.b, key="bravo-own")
    client.force_login(world.a.admin)
    assert client.get(f"/t/alpha/skills/{theirs.pk}/").status_code == 404
    assert client.get(f"/t/alpha/skills/{scene['shared'].pk}/").status_code == 404  # shared: the operator's


def test_the_operator_lists_creates_and_edits_shared_skills(client, world, operator, scene):
    client.force_login(operator)
    assert "Handle a refund request" in client.get("/operator/skills/").content.decode()
    response = client.post(
        "/operator/skills/new/",
        {
            "key": "escalate",
            "name": "Escalate",
            "description": "d",
            "instructions": "Hand over.",
            "status": "active",
            "tiers": [world.a.tenant.tier.slug],
        },
    )
    assert response.status_code == 302
    response = client.post(
        "/operator/skills/escalate/",
        {"key": "escalate", "name": "Escalate", "description": "d", "instructions": "", "status": "active"},
    )
    assert response.status_code == 400
    with all_tenants("test"):
        assert Skill.unscoped.get(key="escalate").tiers == [world.a.tenant.tier.slug]


def test_tenants_never_reach_the_operator_pages(client, world):
    client.force_login(world.a.owner)
    assert client.get("/operator/skills/").status_code == 404

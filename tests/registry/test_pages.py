"""The registry screens render for each role; members get 403 on the write screens;
operators' pages are staff only; form errors, never a 500."""

from __future__ import annotations

import pytest

from agents.registry.models import AgentVersion
from tenants.context import all_tenants
from tests.registry.helpers import in_tenant, own_agent


def catalogue_url(side, rest: str = "") -> str:
    return f"/t/{side.tenant.slug}/catalogue/{rest}"


@pytest.mark.parametrize("role", ["owner", "admin", "member"])
def test_the_catalogue_renders_for_each_role_that_chats(client, world, catalogue, role):
    client.force_login(world.a.user(role))
    response = client.get(catalogue_url(world.a))
    body = response.content.decode()
    assert response.status_code == 200
    assert "Chat with Helpdesk" in body
    assert f'name="agent" value="{catalogue.helpdesk.pk}"' in body
    # Admins also see the agents their plan offers that are not enabled, and their own agents.
    assert ("In your plan, not enabled" in body) == (role != "member")
    assert ("Not enabled" in body) == (role != "member")


def test_the_catalogue_searches_names_and_descriptions(client, world, catalogue):
    client.force_login(world.a.member)
    assert "Chat with Helpdesk" in client.get(catalogue_url(world.a, "?q=HELPDESK agent")).content.decode()
    assert "Chat with Helpdesk" not in client.get(catalogue_url(world.a, "?q=zebra")).content.decode()


def test_members_get_403_on_every_write_screen(client, world, catalogue):
    agent, _version = own_agent(world.a)
    client.force_login(world.a.member)
    for path in ("own/new/", f"own/{agent.pk}/", f"own/{agent.pk}/versions/new/"):
        assert client.get(catalogue_url(world.a, path)).status_code == 403, path
    for verb in ("submit", "approve", "reject", "roll-back"):
        assert client.post(catalogue_url(world.a, f"own/{agent.pk}/versions/1/{verb}/")).status_code == 403, verb


def test_an_admin_drafts_submits_and_the_owner_approves_on_the_screens(client, world, catalogue):
    client.force_login(world.a.admin)
    response = client.post(
        catalogue_url(world.a, "own/new/"),
        {"name": "Refund helper", "instructions": "Answer refunds.", "model": "offline-small"},
    )
    assert response.status_code == 302
    version = in_tenant(world.a, lambda: AgentVersion.objects.get())
    detail = catalogue_url(world.a, f"own/{version.agent_id}/")
    client.post(detail + "versions/1/submit/")
    page = client.get(detail).content.decode()
    assert "Waiting for another reviewer" in page and "Approve and publish" not in page

    client.force_login(world.a.owner)
    assert "Approve and publish" in client.get(detail).content.decode()
    client.post(detail + "versions/1/approve/")
    assert in_tenant(world.a, lambda: AgentVersion.objects.get().state) == "approved"
    assert "Chat with Refund helper" in client.get(catalogue_url(world.a)).content.decode()


def test_the_form_shows_errors_for_bad_input(client, world, catalogue):
    client.force_login(world.a.admin)
    response = client.post(catalogue_url(world.a, "own/new/"), {"name": "X", "instructions": " ", "model": "nope"})
    assert response.status_code == 400
    body = response.content.decode()
    assert "field-errors" in body
    assert in_tenant(world.a, lambda: AgentVersion.objects.count()) == 0


def test_operator_pages_render_and_are_staff_only(client, world, catalogue, operator, second_operator):
    client.force_login(operator)
    assert client.get("/operator/agents/").status_code == 200
    response = client.post(
        "/operator/agents/new/",
        {
            "name": "Translator",
            "instructions": "Translate.",
            "model": "",
            "offered_to_tiers": [world.a.tenant.tier.slug],
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    with all_tenants("test"):
        version = AgentVersion.unscoped.get()
    detail = f"/operator/agents/{version.agent_id}/"
    client.post(detail + "versions/1/submit/")
    listing = client.get("/operator/agents/").content.decode()
    assert "1 waiting" in listing
    client.post(detail + "versions/1/approve/")
    with all_tenants("test"):
        assert AgentVersion.unscoped.get().state == "submitted"  # its author cannot approve it
    client.force_login(second_operator)
    assert "Approve and publish" in client.get(detail).content.decode()
    client.post(detail + "versions/1/approve/")
    with all_tenants("test"):
        assert AgentVersion.unscoped.get().state == "approved"

    client.force_login(world.a.owner)
    assert client.get("/operator/agents/").status_code == 404
    assert client.get(detail).status_code == 404


def test_the_form_offers_only_models_a_turn_could_use(client, world, catalogue):
    """A model of a provider this deployment does not reach is neither offered nor accepted:
    route_model would never use it (it falls back to the tier's default)."""
    from agents.models import ModelOffering, Provider

    with all_tenants("test: a Bedrock model the tier lists"):
        ModelOffering.unscoped.create(key="bedrock-sonnet", name="Sonnet", provider=Provider.BEDROCK, model_id="x")
    tier = world.a.tenant.tier
    tier.allowed_models = ["offline-small", "bedrock-sonnet"]
    tier.save(update_fields=["allowed_models"])
    client.force_login(world.a.admin)

    page = client.get(catalogue_url(world.a, "own/new/")).content.decode()
    assert 'value="offline-small"' in page
    assert 'value="bedrock-sonnet"' not in page
    response = client.post(
        catalogue_url(world.a, "own/new/"), {"name": "X", "instructions": "Y", "model": "bedrock-sonnet"}
    )
    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()
    # The API, which has no list of choices, gets the service's answer.
    api = client.post(
        f"/api/v1/tenants/{world.a.tenant.slug}/registry/agents/",
        {"name": "X", "instructions": "Y", "model": "bedrock-sonnet"},
        content_type="application/json",
    )
    assert api.status_code == 400
    assert "Unknown model" in api.json()["detail"]
    assert in_tenant(world.a, lambda: AgentVersion.objects.count()) == 0

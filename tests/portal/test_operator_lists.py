"""The operator console's long lists (agents, agent identities, tools, skills) hold up with
a thousand tenants: 50 rows a page, a search box, a choice filter that refuses values it
does not know (400, naming the allowed ones), and page numbers that never fail."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from agents.models import Agent, AgentStatus
from agents.skills.models import Skill, SkillStatus
from agents.tools.models import Tool, ToolStatus
from portal.operator import services as operator_services
from tenants.context import all_tenants
from tenants.identity.models import AgentIdentity
from tests.tenants.helpers import platform_audit_entries

pytestmark = pytest.mark.django_db


def make_agents(count, status=AgentStatus.DRAFT, owner=None):
    with all_tenants("test: many agents"):
        for i in range(count):
            Agent.unscoped.create(owner_tenant=owner, slug=f"row-{status}-{i:03d}", name=f"Row {i:03d}", status=status)


def make_identities(count, status="active", owner=None):
    with all_tenants("test: many agent identities"):
        for i in range(count):
            AgentIdentity.objects.create(
                name=f"Row {i:03d}",
                client_id=f"agent-{status}-{owner.pk if owner else 0}-{i:03d}",
                secret_hash="x" * 64,
                owner_tenant=owner,
                allowed_scopes=["kb:read"],
                disabled_at=None if status == "active" else "2026-01-01T00:00:00Z",
            )


def make_tools(count, status=ToolStatus.AVAILABLE, owner=None):
    for i in range(count):
        Tool.objects.create(
            key=f"row-{status}-{i:03d}", name=f"Row {i:03d}", description="A tool.", handler="calculator", status=status
        )


def make_skills(count, status=SkillStatus.ACTIVE, owner=None):
    with all_tenants("test: many skills"):
        for i in range(count):
            Skill.unscoped.create(
                owner_tenant=owner,
                key=f"row-{status}-{i:03d}",
                name=f"Row {i:03d}",
                description="A skill.",
                instructions="Do it.",
                status=status,
            )


@dataclass(frozen=True)
class Listing:
    path: str
    row: str  # what starts each row of the table
    make: Callable
    other_status: str  # a status value the rows made by default do not have
    allowed: str  # the error's list of allowed status values


LISTS = {
    "agents": Listing("/operator/agents/", "<tr data-slug=", make_agents, "published", "draft, published"),
    "identities": Listing(
        "/operator/agent-identities/", "<tr data-agent=", make_identities, "disabled", "active, disabled"
    ),
    "tools": Listing("/operator/tools/", "<tr data-key=", make_tools, "disabled", "available, disabled"),
    "skills": Listing("/operator/skills/", "<tr data-key=", make_skills, "retired", "draft, active, retired"),
}


@pytest.fixture(params=list(LISTS))
def listing(request) -> Listing:
    return LISTS[request.param]


@pytest.fixture
def staff(client, world, operator):
    client.force_login(operator)
    return client


def rows(response, listing: Listing) -> int:
    return response.content.decode().count(listing.row)


def test_it_shows_fifty_rows_and_links_the_next_page(staff, listing):
    listing.make(60)
    response = staff.get(listing.path)
    assert response.status_code == 200
    assert rows(response, listing) == 50
    assert re.search(r'href="[^"?]*\?page=2"', response.content.decode())


def test_the_page_links_keep_the_search(staff, listing):
    listing.make(60)
    response = staff.get(listing.path, {"q": "row"})
    assert rows(response, listing) == 50
    assert re.search(r'href="[^"?]*\?q=row&amp;page=2"', response.content.decode())
    assert rows(staff.get(listing.path, {"q": "row", "page": 2}), listing) == 10


def test_the_search_narrows_the_list(staff, listing):
    listing.make(60)
    response = staff.get(listing.path, {"q": "row 007"})
    assert response.status_code == 200
    assert rows(response, listing) == 1
    assert "Row 007" in response.content.decode()


def test_a_search_with_a_nul_byte_or_of_any_length_is_no_error(staff, listing):
    listing.make(3)
    assert staff.get(listing.path, {"q": "row\x00 001"}).status_code == 200
    assert staff.get(listing.path, {"q": "r" * 5000}).status_code == 200


def test_the_status_filter_narrows_the_list(staff, listing):
    listing.make(60)
    listing.make(2, listing.other_status)
    response = staff.get(listing.path, {"status": listing.other_status})
    assert response.status_code == 200
    assert rows(response, listing) == 2


def test_an_unknown_status_is_a_400_naming_the_allowed_values(staff, listing):
    listing.make(3)
    response = staff.get(listing.path, {"status": "bogus"})
    assert response.status_code == 400
    assert f"use one of: {listing.allowed}." in response.content.decode()
    assert rows(response, listing) == 0


@pytest.mark.parametrize(("page", "shown"), [("999", 10), ("x", 50), ("-1", 10), ("", 50)])
def test_a_page_out_of_range_shows_the_last_and_junk_the_first(staff, listing, page, shown):
    listing.make(60)
    response = staff.get(listing.path, {"page": page})
    assert response.status_code == 200
    assert rows(response, listing) == shown


@pytest.mark.parametrize("name", ["agents", "skills"])  # tools are platform rows only
def test_the_shared_registries_never_list_a_tenants_own_rows(staff, world, name):
    listing = LISTS[name]
    listing.make(2, owner=world.b.tenant)
    assert rows(staff.get(listing.path, {"q": "row"}), listing) == 0


def test_the_identities_owner_filter_tells_shared_from_tenants_own(staff, world):
    listing = LISTS["identities"]
    make_identities(3)
    make_identities(2, owner=world.b.tenant)
    assert rows(staff.get(listing.path, {"q": "row", "owner": "shared"}), listing) == 3
    assert rows(staff.get(listing.path, {"q": "row", "owner": "tenant"}), listing) == 2
    response = staff.get(listing.path, {"owner": "mine"})
    assert response.status_code == 400
    assert "use one of: shared, tenant." in response.content.decode()


def test_the_identities_search_finds_an_owner_tenant(staff, world):
    make_identities(2, owner=world.b.tenant)
    make_identities(3)
    response = staff.get(LISTS["identities"].path, {"q": world.b.tenant.name})
    assert rows(response, LISTS["identities"]) == 2


def test_reading_every_tenants_agent_identities_is_audited(staff, world, operator):
    make_identities(2, owner=world.b.tenant)
    assert staff.get(LISTS["identities"].path).status_code == 200
    [entry] = [
        e for e in platform_audit_entries(operator_services.READ_ACTION) if e.after == {"page": "agent_identities"}
    ]
    assert (entry.actor, entry.tenant_id) == (operator, None)

"""Billing names agents as the chat does ("TPS report assistant"), not by the slug its usage
records keep; the slug stays the identifier in links, CSV and title attributes."""

from __future__ import annotations

import csv
import io

import pytest
from django.urls import reverse

from agents.models import Agent, AgentStatus
from tenants.context import all_tenants
from tests.billing.usage_helpers import at, record_usage, today

pytestmark = pytest.mark.django_db


def url(name: str, slug: str = "alpha") -> str:
    return reverse(f"billing:{name}", kwargs={"tenant_slug": slug})


@pytest.fixture
def agents(world):
    with all_tenants("test: agents of the catalogue and of tenant A"):
        for slug, name, owner in (
            ("tps-reports", "TPS report assistant", None),
            ("analyst", "Analyst", None),
            ("analyst", "Alpha's own analyst", world.a.tenant),  # A's own agent wins over the shared one
        ):
            Agent.unscoped.create(slug=slug, name=name, owner_tenant=owner, status=AgentStatus.PUBLISHED)
    for agent, tokens in (("tps-reports", 3000), ("analyst", 2000), ("retired-bot", 1000)):
        record_usage(world.a.tenant, at(today()), agent=agent, input_tokens=tokens)
    record_usage(world.b.tenant, at(today()), agent="analyst")


def test_the_by_agent_breakdown_shows_names_and_keeps_the_slug_as_key_and_title(world, client, agents):
    client.force_login(world.a.billing)
    response = client.get(url("dashboard"))
    [(_, _, rows)] = [b for b in response.context["breakdowns"] if b[0] == "agent"]
    assert [(r.key, r.label) for r in rows] == [
        ("tps-reports", "TPS report assistant"),
        ("analyst", "Alpha's own analyst"),
        ("retired-bot", "retired-bot"),  # deleted since: its slug is all there is
    ]
    body = response.content.decode()
    assert 'title="TPS report assistant (tps-reports)"' in body
    assert 'agent=tps-reports">TPS report assistant</a>' in body
    assert '<th scope="row" title="tps-reports">TPS report assistant</th>' in body


def test_another_tenant_never_sees_a_tenants_own_agent_name(world, client, agents):
    client.force_login(world.b.billing)
    [(_, _, rows)] = [b for b in client.get(url("dashboard", "bravo")).context["breakdowns"] if b[0] == "agent"]
    assert [(r.key, r.label) for r in rows] == [("analyst", "Analyst")]


def test_the_agent_csv_has_the_name_and_the_slug(world, client, agents):
    client.force_login(world.a.billing)
    response = client.get(reverse("billing:export_csv", kwargs={"tenant_slug": "alpha"}), {"dataset": "agent"})
    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert [row[:2] for row in rows[1:]] == [
        ["TPS report assistant", "tps-reports"],
        ["Alpha's own analyst", "analyst"],
        ["retired-bot", "retired-bot"],
    ]


def test_the_usage_events_carry_the_agents_name(world, client, agents):
    client.force_login(world.a.billing)
    rows = client.get(url("events")).context["rows"]
    assert sorted((row["event"].agent_slug, row["agent_name"]) for row in rows) == [
        ("analyst", "Alpha's own analyst"),
        ("retired-bot", "retired-bot"),
        ("tps-reports", "TPS report assistant"),
    ]


def test_the_usage_events_page_shows_the_agents_name_with_the_slug_as_its_title(world, client, agents):
    client.force_login(world.a.billing)
    body = client.get(url("events")).content.decode()
    assert '<td class="wrap" title="tps-reports">TPS report assistant</td>' in body
    assert '<td class="wrap">retired-bot</td>' in body  # a deleted agent: its slug is all there is
    assert "<code>tps-reports</code>" not in body

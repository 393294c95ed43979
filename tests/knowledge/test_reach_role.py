"""Which bases a caller reaches is asked with the caller's role, always: no helper has a
default that would widen a forgotten role to every base, and the answer costs the same
few queries however many agents the tenant has."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents.knowledge import services
from agents.knowledge.models import AgentKnowledge
from agents.models import Agent, AgentStatus
from tenants.context import all_tenants, tenant_context
from tenants.identity.models import AgentGrant
from tests.agents.helpers import _identity, make_catalogue
from tests.knowledge.helpers import entitle, make_kb

REACH = ("readable_knowledge_bases", "access_knowledge_base", "access_document")
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", REACH)
def test_the_role_is_a_required_keyword_of_every_reach_helper(name):
    role = inspect.signature(getattr(services, name)).parameters["role"]
    assert role.kind is inspect.Parameter.KEYWORD_ONLY
    assert role.default is inspect.Parameter.empty


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in REACH:
                yield node


def test_every_caller_in_the_project_passes_the_role():
    checked = []
    for path in ROOT.glob("*/**/*.py"):
        if path.is_relative_to(ROOT / "tests") or ".venv" in path.parts:
            continue
        for call in _calls(ast.parse(path.read_text())):
            where = f"{path.relative_to(ROOT)}:{call.lineno}"
            assert "role" in {k.arg for k in call.keywords}, f"{where} does not pass role="
            checked.append(where)
    assert len(checked) >= 6  # the API, the UI and the services' own access helpers


def _enabled_agent(world, catalogue, kb, n: int) -> None:
    with all_tenants("test: more shared agents"):
        agent = Agent.unscoped.create(
            slug=f"extra-{n}",
            name=f"Extra {n}",
            model=catalogue.offering,
            offered_to_tiers=[world.a.tenant.tier.slug],
            status=AgentStatus.PUBLISHED,
            identity=_identity(f"Extra {n}"),
        )
    with tenant_context(world.a.tenant):
        AgentGrant.objects.create(agent=agent.identity)
        AgentKnowledge.objects.create(agent=agent, knowledge_base=kb)


def _queries(world, role: str) -> int:
    with tenant_context(world.a.tenant), CaptureQueriesContext(connection) as captured:
        list(services.readable_knowledge_bases(role=role))
    return len(captured.captured_queries)


def test_a_members_reach_costs_the_same_queries_for_one_agent_or_many(world):
    entitle(world.a.tenant)
    catalogue = make_catalogue(world.a.tenant)
    handbook, payroll = make_kb(world.a, "Handbook"), make_kb(world.a, "Payroll")
    with tenant_context(world.a.tenant):
        AgentKnowledge.objects.create(agent=catalogue.helpdesk, knowledge_base=handbook)
    one_agent = _queries(world, "member")
    for n in range(8):
        _enabled_agent(world, catalogue, handbook, n)

    assert _queries(world, "member") == one_agent <= 5
    with tenant_context(world.a.tenant):
        assert list(services.readable_knowledge_bases(role="member")) == [handbook]
        assert set(services.readable_knowledge_bases(role="admin")) == {handbook, payroll}

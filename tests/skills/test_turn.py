"""Skills in a real chat turn: what the local runtime receives, what it costs, and that an
edit reaches the next turn."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from agents import runtime_gateway
from agents.models import Invocation, Message
from agents.runtime import agent as reference_agent
from agents.skills import services
from tenants.context import tenant_context
from tenants.services import Actor
from tests.agents.helpers import make_catalogue
from tests.skills.helpers import attach, own_skill, shared_skill


@pytest.fixture
def chat(world, settings, monkeypatch, client, django_capture_on_commit_callbacks):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    monkeypatch.setattr(runtime_gateway, "_local_client", None)
    catalogue = make_catalogue(world.a.tenant, world.b.tenant)
    received = []  # what the reference agent was handed: (request, system prompt)
    build = reference_agent.build_model_input

    def spy(request, caller, memories=()):
        model_input = build(request, caller, memories)
        received.append((request, model_input.system))
        return model_input

    monkeypatch.setattr(reference_agent, "build_model_input", spy)

    def ask(user, text: str = "I want my money back", slug: str = "alpha"):
        client.force_login(user)
        response = client.post(f"/t/{slug}/chat/new/", {"agent": catalogue.helpdesk.pk})
        with CaptureQueriesContext(connection) as queries:
            with django_capture_on_commit_callbacks(execute=True):
                client.post(response["Location"] + "messages/", {"text": text})
        tenant = world.a.tenant if slug == "alpha" else world.b.tenant
        with tenant_context(tenant):
            answer = Message.objects.filter(role=Message.Role.ASSISTANT).latest("created_at")
            assert Invocation.objects.get(assistant_message=answer).status == "done", answer.error
        return received[-1], [q["sql"] for q in queries.captured_queries]

    return {"catalogue": catalogue, "ask": ask}


def test_the_bridged_skill_reaches_the_runtime_under_a_skills_section(world, chat):
    shared = shared_skill(world.a.tenant.tier)
    mine = own_skill(world.a, extends=shared, steps="Ask finance to approve refunds above 100 EUR.")
    attach(world.a, chat["catalogue"].helpdesk, mine)
    (request, system), _ = chat["ask"](world.a.member)
    assert [skill.name for skill in request.skills] == ["Alpha Inc refunds"]
    assert "Skills: procedures you follow." in system
    assert "## Skill: Alpha Inc refunds\nUse when: A refund above 100 EUR." in system
    common = system.index("1. Confirm who is asking.")
    assert common < system.index("### Alpha Inc's steps") < system.index("Ask finance to approve")


def test_another_tenants_skill_never_reaches_its_turns(world, chat):
    attach(world.a, chat["catalogue"].helpdesk, own_skill(world.a, steps="Alpha's secret steps."))
    (request, system), _ = chat["ask"](world.b.member, slug="bravo")
    assert request.skills == ()
    assert "Alpha's secret steps" not in system and "Skills:" not in system


def test_an_agent_without_skills_sends_no_skills_field_and_costs_no_query(world, chat, monkeypatch):
    sent = []
    build = runtime_gateway.build_request

    def spy(*args, **kwargs):
        body = build(*args, **kwargs)
        sent.append(body)
        return body

    monkeypatch.setattr(runtime_gateway, "build_request", spy)
    chat["ask"](world.a.member)  # the first turn fills the cache (one query)
    (request, _), sql = chat["ask"](world.a.member)
    assert "skills" not in sent[-1]
    assert request.skills == ()
    assert not [q for q in sql if "skills_" in q], "a steady-state turn read the skills tables"


def test_a_turn_with_skills_reads_them_from_the_cache(world, chat):
    attach(world.a, chat["catalogue"].helpdesk, shared_skill(world.a.tenant.tier))
    chat["ask"](world.a.member)
    (request, _), sql = chat["ask"](world.a.member)
    assert [skill.name for skill in request.skills] == ["Handle a refund request"]
    assert not [q for q in sql if "skills_" in q]


def test_skills_for_turn_costs_one_query_cold_and_none_warm(world, django_assert_num_queries):
    catalogue = make_catalogue(world.a.tenant)
    attach(world.a, catalogue.helpdesk, shared_skill(world.a.tenant.tier))
    with tenant_context(world.a.tenant):
        with django_assert_num_queries(1):
            services.skills_for_turn(world.a.tenant, catalogue.helpdesk)
        with django_assert_num_queries(0):
            assert len(services.skills_for_turn(world.a.tenant, catalogue.helpdesk)) == 1
            assert services.skills_for_turn(world.a.tenant, catalogue.not_enabled) == []


def test_an_edit_reaches_the_next_turn(world, chat):
    shared = shared_skill(world.a.tenant.tier)
    mine = own_skill(world.a, extends=shared, steps="Old tenant steps.")
    attach(world.a, chat["catalogue"].helpdesk, mine)
    (_, system), _ = chat["ask"](world.a.member)
    assert "Old tenant steps." in system
    admin = Actor(user=world.a.admin, membership=world.a.memberships["admin"])
    with tenant_context(world.a.tenant):
        mine.instructions = "New tenant steps."
        services.save_skill(admin, mine)
    (_, system), _ = chat["ask"](world.a.member)
    assert "New tenant steps." in system and "Old tenant steps." not in system


def test_an_operator_edit_of_the_shared_skill_reaches_every_tenants_next_turn(world, chat, operator):
    shared = shared_skill(world.a.tenant.tier)
    attach(world.a, chat["catalogue"].helpdesk, own_skill(world.a, extends=shared))
    chat["ask"](world.a.member)
    shared.instructions = "1. Check the order number."
    services.save_skill(Actor(user=operator), shared)
    (_, system), _ = chat["ask"](world.a.member)
    assert "1. Check the order number." in system and "Confirm who is asking" not in system


def test_a_retired_shared_skill_takes_its_bridged_skills_with_it(world, chat, operator):
    shared = shared_skill(world.a.tenant.tier)
    attach(world.a, chat["catalogue"].helpdesk, own_skill(world.a, extends=shared))
    shared.status = "retired"
    services.save_skill(Actor(user=operator), shared)
    (request, _), _ = chat["ask"](world.a.member)
    assert request.skills == ()


def test_a_renamed_tenant_heads_its_bridged_steps_with_the_new_name_at_once(world, chat):
    mine = own_skill(world.a, extends=shared_skill(world.a.tenant.tier), steps="Our own steps.")
    attach(world.a, chat["catalogue"].helpdesk, mine)
    (_, system), _ = chat["ask"](world.a.member)
    assert "### Alpha Inc's steps" in system
    world.a.tenant.name = "Alpha Group"
    world.a.tenant.save(update_fields=["name"])
    (_, system), _ = chat["ask"](world.a.member)
    assert "### Alpha Group's steps" in system and "Alpha Inc's steps" not in system


def test_skills_read_while_an_edit_is_saved_are_not_served_after_the_save(world, monkeypatch):
    # A turn reads the old rows; an admin's save commits (and invalidates) before that turn
    # caches what it read. The next turn must follow the new steps, not that old copy.
    catalogue = make_catalogue(world.a.tenant)
    mine = own_skill(world.a, steps="Old tenant steps.")
    attach(world.a, catalogue.helpdesk, mine)
    admin = Actor(user=world.a.admin, membership=world.a.memberships["admin"])
    build = services._build

    def built_then_saved_elsewhere(tenant):
        by_agent = build(tenant)
        monkeypatch.setattr(services, "_build", build)
        mine.instructions = "New tenant steps."
        services.save_skill(admin, mine)  # commits at once here: autocommit, no outer transaction
        return by_agent

    monkeypatch.setattr(services, "_build", built_then_saved_elsewhere)
    with tenant_context(world.a.tenant):
        [old] = services.skills_for_turn(world.a.tenant, catalogue.helpdesk)
        [new] = services.skills_for_turn(world.a.tenant, catalogue.helpdesk)
    assert "Old tenant steps." in str(old)
    assert "New tenant steps." in str(new)

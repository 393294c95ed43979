"""Django's cache in Redis (REDIS_URL), with Redis unreachable: the caches are an optimisation, so a page
and a turn's lookups read the database instead, and a save that cannot move a cache's
generation on still saves (portal.cache: why that serves no stale entry for longer than
the entry's TTL)."""

from __future__ import annotations

import logging

import pytest

from agents.guardrails import services as guardrail_services
from agents.skills import services as skill_services
from portal.cache import next_generation
from tests.agents.helpers import make_catalogue
from tests.agents.test_chat import chat_url, signed_in_as, start
from tests.guardrails.conftest import grant_custom_guardrails, set_override, set_tier_policy
from tests.portal.helpers import closed_port, redis_cache
from tests.skills.helpers import attach, own_skill, shared_skill


def take_redis_down(settings, monkeypatch) -> None:
    """REDIS_URL and Django's cache pointed at a closed port, as with the one Redis down."""
    url = f"redis://127.0.0.1:{closed_port()}/0"
    settings.REDIS_URL = url
    settings.CACHES = redis_cache(url)
    monkeypatch.setattr("billing.limits._redis_and_script", None)  # its client is made for the URL on first use


@pytest.fixture
def catalogue(world):
    return make_catalogue(world.a.tenant, world.b.tenant)


def test_moving_a_generation_on_with_redis_down_does_not_raise(settings, monkeypatch, caplog):
    take_redis_down(settings, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="portal.cache"):
        next_generation("portal-test:gen")
    assert "portal-test:gen" in caplog.text  # said once, as a warning: the outage is visible


def test_the_chat_pages_answer_with_redis_down(client, world, catalogue, settings, monkeypatch):
    signed_in_as(client, world.a.member)
    conversation = start(client, world.a, catalogue.helpdesk)
    take_redis_down(settings, monkeypatch)
    assert client.get(chat_url(world.a)).status_code == 200
    assert client.get(chat_url(world.a, f"{conversation.pk}/")).status_code == 200


def test_the_guardrails_page_shows_and_saves_the_policy_with_redis_down(client, world, settings, monkeypatch):
    grant_custom_guardrails(world.a.tenant)
    client.force_login(world.a.admin)
    take_redis_down(settings, monkeypatch)
    assert client.get("/t/alpha/guardrails/").status_code == 200
    response = client.post("/t/alpha/guardrails/policy/", {"injection": "high", "blocked_terms": "zebra"})
    assert response.status_code == 302
    effective = guardrail_services.effective_policy(world.a.tenant).config
    assert effective["injection"] == "high" and effective["blocked_terms"] == ["zebra"]


def test_a_turns_guardrail_policy_is_read_from_the_database_with_redis_down(world, settings, monkeypatch):
    grant_custom_guardrails(world.a.tenant)
    set_tier_policy(world.a.tenant.tier, {"injection": "high"})
    set_override(world.a.tenant, {"blocked_terms": ["zebra"]})
    take_redis_down(settings, monkeypatch)
    effective = guardrail_services.effective_policy(world.a.tenant)
    assert effective.config["injection"] == "high" and effective.config["blocked_terms"] == ["zebra"]
    assert guardrail_services.tenants_generation() == 0


def test_a_save_with_redis_down_saves_and_the_next_turn_sees_it(world, settings, monkeypatch):
    grant_custom_guardrails(world.a.tenant)
    set_override(world.a.tenant, {"blocked_terms": ["zebra"]})
    take_redis_down(settings, monkeypatch)
    assert guardrail_services.effective_policy(world.a.tenant).config["blocked_terms"] == ["zebra"]
    set_override(world.a.tenant, {"blocked_terms": ["zebra", "walrus"]})
    assert "walrus" in guardrail_services.effective_policy(world.a.tenant).config["blocked_terms"]


def test_a_turns_skills_are_read_from_the_database_with_redis_down(world, catalogue, settings, monkeypatch):
    mine = own_skill(world.a, extends=shared_skill(world.a.tenant.tier), steps="Ask finance.")
    attach(world.a, catalogue.helpdesk, mine)
    take_redis_down(settings, monkeypatch)
    skills = skill_services.skills_for_turn(world.a.tenant, catalogue.helpdesk)
    assert [skill["name"] for skill in skills] == ["Alpha Inc refunds"]

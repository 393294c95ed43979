"""Redis unreachable (REDIS_URL set): posting a message fails closed with 503 and "try
again", nothing saved, logged once as a warning; never a generic 500."""

from __future__ import annotations

import logging

import pytest
from django.test import Client

from agents.models import Conversation, Invocation, Message
from portal.db import busy
from tenants.context import tenant_context
from tests.agents.test_chat import HX, chat_url
from tests.billing.helpers import actor
from tests.portal.helpers import closed_port, problem, redis_cache


@pytest.fixture(params=["cache and limiter", "limiter"])
def redis_down(request, settings, monkeypatch):
    """REDIS_URL and the cache pointed at a port nothing listens on (bound, then closed);
    or REDIS_URL alone (the guardrail policy still read from a working cache: the rate
    limiter's Lua script is then the first to meet Redis down)."""
    url = f"redis://127.0.0.1:{closed_port()}/0"
    settings.REDIS_URL = url
    if request.param == "cache and limiter":
        settings.CACHES = redis_cache(url)
    monkeypatch.setattr("billing.limits._redis_and_script", None)  # its client is made for the URL on first use
    return url


@pytest.fixture
def conversation(world, catalogue):
    from agents import services

    with tenant_context(world.a.tenant):
        return services.start_conversation(actor(world.a), catalogue.helpdesk.pk)


def _client(user) -> Client:
    client = Client(raise_request_exception=False)  # a 500 is an answer here, not an exception
    client.force_login(user)
    return client


def _saved(world):
    with tenant_context(world.a.tenant):
        return Message.objects.count(), Invocation.objects.count()


def test_posting_a_message_with_redis_down_answers_503_problem_json_with_retry_after(
    world, conversation, redis_down, caplog
):
    client = _client(world.a.member)
    with caplog.at_level(logging.WARNING):
        response = client.post(
            f"/api/v1/tenants/{world.a.tenant.slug}/conversations/{conversation.pk}/messages/",
            {"text": "Refunds?"},
            content_type="application/json",
        )
    body = problem(response, 503)
    assert (body["title"], body["detail"]) == (busy.TITLE, busy.REDIS_DETAIL)
    assert response["Retry-After"] == str(busy.RETRY_AFTER_SECONDS)
    assert _saved(world) == (0, 0)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING, warnings


@pytest.mark.parametrize("htmx", [True, False])
def test_the_composer_and_the_page_say_try_again_with_redis_down(world, conversation, redis_down, htmx):
    client = _client(world.a.member)
    response = client.post(chat_url(world.a, f"{conversation.pk}/messages/"), {"text": "Hi"}, **(HX if htmx else {}))
    assert response.status_code == 503
    assert response["Retry-After"] == str(busy.RETRY_AFTER_SECONDS)
    assert busy.REDIS_MESSAGE in response.content.decode()
    assert _saved(world) == (0, 0)
    with tenant_context(world.a.tenant):
        assert Conversation.objects.filter(pk=conversation.pk).exists()


def test_it_heads_the_page_with_a_temporary_problem_not_the_portal_being_busy(world, conversation, redis_down):
    client = _client(world.a.member)
    response = client.post(chat_url(world.a, f"{conversation.pk}/messages/"), {"text": "Hi"})
    assert response.status_code == 503
    page = response.content.decode()
    assert f"<h1>{busy.REDIS_HEADING}</h1>" in page
    assert f"<title>{busy.REDIS_PAGE_TITLE} · Tenant Portal</title>" in page
    assert "busy" not in page.lower()  # the rate-limit and busy-database answers say that, not this one


@pytest.fixture
def failed_turn(world, catalogue, runtime):
    """A turn that failed while Redis was up (asked before redis_down takes it away)."""
    from agents.runtime_gateway import RuntimeRejected
    from tests.billing.helpers import ask_and_run

    runtime.events = [RuntimeRejected("nope")]
    return ask_and_run(world.a, catalogue.helpdesk)


def test_retrying_a_turn_with_redis_down_answers_503_problem_json_and_changes_nothing(world, failed_turn, redis_down):
    client = _client(world.a.member)
    response = client.post(f"/api/v1/tenants/{world.a.tenant.slug}/invocations/{failed_turn.pk}/retry/")
    body = problem(response, 503)
    assert (body["title"], body["detail"]) == (busy.TITLE, busy.REDIS_DETAIL)
    with tenant_context(world.a.tenant):
        assert list(Invocation.objects.values_list("pk", "status")) == [(failed_turn.pk, "failed")]
        assert Message.objects.get(pk=failed_turn.assistant_message_id).status == "failed"

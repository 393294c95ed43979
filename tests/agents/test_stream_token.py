"""Stream tokens: the stream_url a POST answers with opens that one turn's events,
served by portal.asgi straight from the Redis relay; anything else goes through Django."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import pytest
from asgiref.sync import async_to_sync
from django.conf import settings as django_settings
from django.core import signing

from agents import streaming, views
from agents.models import MessageStatus
from tenants.context import tenant_context
from tenants.models import Membership, TenantStatus
from tests.agents.helpers import make_turn

needs_redis = pytest.mark.skipif(not django_settings.REDIS_URL, reason="REDIS_URL is not set (the Redis relay)")


@pytest.fixture
def turn(world, catalogue):
    _, _, invocation = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk, status=MessageStatus.STREAMING)
    yield invocation
    if django_settings.REDIS_URL:
        streaming._redis().delete(f"{streaming.KEY_PREFIX}{invocation.pk}")


def api_events(slug: str, invocation_id) -> str:
    return f"/api/v1/tenants/{slug}/invocations/{invocation_id}/events/"


def token_url(world, invocation, user=None) -> str:
    user = user or world.a.member
    return views.stream_url(api_events("alpha", invocation.pk), world.a.tenant, invocation.pk, user.pk)


def scope(url: str, *headers: tuple[bytes, bytes]) -> dict:
    parts = urlsplit(url)
    return {
        "type": "http",
        "method": "GET",
        "path": parts.path,
        "query_string": parts.query.encode(),
        "headers": list(headers),
    }


def serve(request_scope: dict) -> tuple[dict, str]:
    """(response start, body) of the ASGI application for a client that stays connected."""
    from portal.asgi import application

    sent = []

    async def receive():
        if not sent:
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    async def run():
        await asyncio.wait_for(application(request_scope, receive, send), 10)

    async_to_sync(run)()
    body = b"".join(m.get("body", b"") for m in sent[1:]).decode()
    assert [m["more_body"] for m in sent[1:]] == [True] * (len(sent) - 2) + [False]  # the response ended
    return sent[0], body


@pytest.fixture
def redis_relay(settings):
    settings.REDIS_URL = django_settings.REDIS_URL


def publish_answer(invocation) -> None:
    streaming.publish(invocation.pk, 1, "status", {"status": "streaming"})
    streaming.publish(invocation.pk, 2, "delta", {"text": "Hello"})
    streaming.publish(invocation.pk, 3, "done", {"message_id": invocation.assistant_message_id})


@needs_redis
def test_it_serves_a_turn_opened_with_its_stream_token_from_redis(world, turn, redis_relay):
    publish_answer(turn)
    start, body = serve(scope(token_url(world, turn)))
    assert start["status"] == 200
    headers = dict(start["headers"])
    assert headers[b"content-type"] == b"text/event-stream"
    assert headers[b"cache-control"] == b"no-cache"
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert body.startswith("retry: 1000\n\n")
    assert [line for line in body.splitlines() if line.startswith("id: ")] == ["id: 1", "id: 2", "id: 3"]


@needs_redis
def test_it_resumes_after_the_last_event_id(world, turn, redis_relay):
    publish_answer(turn)
    _, body = serve(scope(token_url(world, turn), (b"last-event-id", b"2")))
    assert [line for line in body.splitlines() if line.startswith("id: ")] == ["id: 3"]


@needs_redis
def test_it_opens_the_stream_url_a_post_answers_with(world, turn, redis_relay):
    url = token_url(world, turn)
    stream = views.signed_stream(scope(url))
    assert (stream.tenant_id, stream.user_id, stream.invocation_id, stream.after) == (
        world.a.tenant.pk,
        world.a.member.pk,
        turn.pk,
        0,
    )


@needs_redis
def test_the_chat_page_stream_opens_with_its_token_too(client, world, turn, redis_relay):
    import html
    import re

    client.force_login(world.a.member)
    page = client.get(f"/t/alpha/chat/{turn.conversation_id}/").content.decode()
    url = html.unescape(re.search(r'data-stream-url="([^"]+)"', page).group(1))
    stream = views.signed_stream(scope(url))
    assert (stream.tenant_id, stream.user_id, stream.invocation_id) == (world.a.tenant.pk, world.a.member.pk, turn.pk)
    publish_answer(turn)
    _, body = serve(scope(url))
    assert [line for line in body.splitlines() if line.startswith("id: ")] == ["id: 1", "id: 2", "id: 3"]


@needs_redis
@pytest.mark.parametrize("how", ["no token", "forged", "other turn", "other tenant", "other user", "post", "garbage"])
def test_it_leaves_anything_but_a_valid_token_to_django(world, turn, catalogue, redis_relay, how):
    url = token_url(world, turn)
    path, query = url.split("?")
    _, _, other = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk)
    request = scope(url)
    if how == "no token":
        request = scope(path)
    elif how == "forged":
        request = scope(url[:-3] + ("aaa" if not url.endswith("aaa") else "bbb"))
    elif how == "other turn":
        request = scope(f"{api_events('alpha', other.pk)}?{query}")
    elif how == "other tenant":
        request = scope(f"{api_events(world.b.tenant.slug, turn.pk)}?{query}")
    elif how == "other user":
        request = scope(url.replace(f".{world.a.member.pk}:", f".{world.a.owner.pk}:"))
    elif how == "post":
        request = {**scope(url), "method": "POST"}
    elif how == "garbage":
        request = scope(f"{path}?st=1.2:x:%00")
    assert views.signed_stream(request) is None


@needs_redis
def test_it_leaves_an_expired_token_to_django(world, turn, redis_relay, monkeypatch):
    url = token_url(world, turn)
    later = time.time() + views.STREAM_TOKEN_SECONDS + 1
    monkeypatch.setattr(signing.time, "time", lambda: later)
    assert views.signed_stream(scope(url)) is None


def test_it_leaves_streams_to_django_without_redis(world, turn, settings):
    settings.REDIS_URL = ""  # the database relay needs the tenant context Django sets
    assert views.signed_stream(scope(token_url(world, turn))) is None


def test_it_ends_a_quiet_stream_once_the_reader_is_no_longer_a_member(world, turn):
    assert views._turn_state(world.a.tenant.pk, world.a.member.pk, turn.pk) is not None
    with tenant_context(world.a.tenant):
        Membership.objects.filter(user=world.a.member).delete()
    assert views._turn_state(world.a.tenant.pk, world.a.member.pk, turn.pk) is None


def test_it_ends_a_quiet_stream_once_the_tenant_is_suspended(world, turn):
    world.a.tenant.status = TenantStatus.SUSPENDED
    world.a.tenant.save(update_fields=["status"])
    assert views._turn_state(world.a.tenant.pk, world.a.member.pk, turn.pk) is None


def test_it_ends_a_quiet_stream_whose_turn_is_gone(world, turn):
    with tenant_context(world.a.tenant):
        turn.delete()
    assert views._turn_state(world.a.tenant.pk, world.a.member.pk, turn.pk) is None


def test_it_ends_a_quiet_stream_once_the_reader_is_deactivated(world, turn):
    world.a.member.is_active = False
    world.a.member.save(update_fields=["is_active"])
    assert views._turn_state(world.a.tenant.pk, world.a.member.pk, turn.pk) is None

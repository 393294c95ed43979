"""Redis answering but refusing (REDIS_URL set): a read-only replica after a failover
(READONLY), a server at its memory limit (OOM). Like Redis unreachable
(test_redis_down.py): posting a message fails closed with 503 and "try again", nothing
saved; never a generic 500. Each case is a real redis-server started for the test."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import redis
from django.test import Client

from agents.models import Invocation, Message
from portal.db import busy
from tenants.context import tenant_context
from tests.billing.helpers import actor
from tests.portal.helpers import closed_port, problem

SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@pytest.fixture(
    params=[
        # A replica of a primary that is gone: what a client still pointed at the old
        # primary meets after a failover demoted it.
        (redis.exceptions.ReadOnlyError, ["--replicaof", "127.0.0.1", str(closed_port())]),
        # Every write refused at the memory limit (maxmemory reached, nothing to evict).
        (redis.exceptions.OutOfMemoryError, ["--maxmemory", "1", "--maxmemory-policy", "noeviction"]),
    ],
    ids=["read-only replica", "out of memory"],
)
def redis_refusing(request, settings, monkeypatch, tmp_path):
    refusal, options = request.param
    port = closed_port()
    server = subprocess.Popen(  # noqa: S603 (fixed argv)
        [SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        + ["--dir", str(tmp_path), *options],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise
            time.sleep(0.05)
    with pytest.raises(refusal):
        client.set("proof", "1")  # the server refuses writes as this case says
    client.close()
    settings.REDIS_URL = url
    monkeypatch.setattr("billing.limits._redis_and_script", None)  # its client is made for the URL on first use
    yield url
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture
def conversation(world, catalogue):
    from agents import services

    with tenant_context(world.a.tenant):
        return services.start_conversation(actor(world.a), catalogue.helpdesk.pk)


def _saved(world):
    with tenant_context(world.a.tenant):
        return Message.objects.count(), Invocation.objects.count()


def test_posting_a_message_answers_503_problem_json_with_retry_after(world, conversation, redis_refusing):
    client = Client(raise_request_exception=False)  # a 500 is an answer here, not an exception
    client.force_login(world.a.member)
    response = client.post(
        f"/api/v1/tenants/{world.a.tenant.slug}/conversations/{conversation.pk}/messages/",
        {"text": "Refunds?"},
        content_type="application/json",
    )
    body = problem(response, 503)
    assert body["title"] == busy.TITLE
    assert response["Retry-After"] == str(busy.RETRY_AFTER_SECONDS)
    assert _saved(world) == (0, 0)


def test_the_composer_says_try_again(world, conversation, redis_refusing):
    from tests.agents.test_chat import chat_url

    client = Client(raise_request_exception=False)
    client.force_login(world.a.member)
    response = client.post(chat_url(world.a, f"{conversation.pk}/messages/"), {"text": "Hi"})
    assert response.status_code == 503
    assert response["Retry-After"] == str(busy.RETRY_AFTER_SECONDS)
    assert _saved(world) == (0, 0)

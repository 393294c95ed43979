"""What a chat turn sends the runtime: the live (approved) version's instructions, never a
draft's or a rejected one's. The runtime is faked at its seam; the request is the real one
(agents.runtime_gateway.build_request)."""

from __future__ import annotations

import pytest

from agents import runtime_gateway
from agents.models import Conversation
from agents.registry import services
from tests.registry.helpers import actor, in_tenant, own_agent


@pytest.fixture
def sent(monkeypatch):
    """The instructions of every request a turn built for the runtime."""
    seen: list[str] = []

    def fake_invoke(tenant, invocation):
        seen.append(runtime_gateway.build_request(invocation)["agent"]["instructions"])
        yield {"type": "delta", "text": "ok"}
        yield {"type": "usage", "input_tokens": 10, "output_tokens": 2}

    monkeypatch.setattr("agents.runtime_gateway.invoke", fake_invoke)
    return seen


def ask(client, side, agent, capture) -> None:
    client.force_login(side.member)
    conversation = in_tenant(side, lambda: Conversation.objects.create(user=side.member, agent=agent))
    with capture(execute=True):
        response = client.post(
            f"/t/{side.tenant.slug}/chat/{conversation.pk}/messages/", {"text": "Hi?"}, HTTP_HX_REQUEST="true"
        )
    assert response.status_code == 202


def test_approval_changes_what_the_next_turn_sends_and_drafts_or_rejections_never_do(
    client, world, catalogue, eager, sent, django_capture_on_commit_callbacks
):
    admin, owner = actor(world.a, "admin"), actor(world.a, "owner")
    agent, first = own_agent(world.a, "admin", instructions="Version one rules.")

    def publish(version):
        services.submit(admin.user, version, actor=admin)
        services.approve(owner.user, version, actor=owner)

    in_tenant(world.a, lambda: publish(first))
    ask(client, world.a, agent, django_capture_on_commit_callbacks)

    from tests.registry.helpers import draft

    drafted = in_tenant(
        world.a, lambda: services.create_version(admin.user, agent, draft(instructions="Draft rules."), actor=admin)
    )
    rejected = in_tenant(
        world.a, lambda: services.create_version(admin.user, agent, draft(instructions="Rejected rules."), actor=admin)
    )
    in_tenant(world.a, lambda: services.submit(admin.user, rejected, actor=admin))
    in_tenant(world.a, lambda: services.reject(owner.user, rejected, "No", actor=owner))
    ask(client, world.a, agent, django_capture_on_commit_callbacks)

    approved = in_tenant(
        world.a,
        lambda: services.create_version(admin.user, agent, draft(instructions="Version four rules."), actor=admin),
    )
    in_tenant(world.a, lambda: publish(approved))
    ask(client, world.a, agent, django_capture_on_commit_callbacks)

    assert drafted.state == "draft"
    assert sent == ["Version one rules.", "Version one rules.", "Version four rules."]

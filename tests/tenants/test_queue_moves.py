"""A tenant whose queue changes (a move between deployment models) takes its still-queued
turns along: their tasks sat in the old queue, which may have no worker any more."""

from __future__ import annotations

import pytest
from django.urls import reverse

from agents import services as agent_services
from agents.models import Invocation, MessageStatus
from agents.tasks import run_turn
from portal.celery import app
from tenants import services
from tenants.context import all_tenants, tenant_context
from tenants.models import AuditLog, DeploymentModel
from tests.agents.helpers import make_catalogue
from tests.billing.helpers import ask

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalogue(world):
    return make_catalogue(world.a.tenant, world.b.tenant)


@pytest.fixture
def sent(monkeypatch):
    calls = []
    monkeypatch.setattr(run_turn, "apply_async", lambda args, queue, retries=0: calls.append((args, queue)))
    return calls


def queue_of(side, invocation) -> str:
    with tenant_context(side.tenant):
        return Invocation.objects.get(pk=invocation.pk).queue


def test_it_sends_a_tenants_queued_turns_to_its_new_queue_after_commit(
    world, catalogue, operator, sent, django_capture_on_commit_callbacks
):
    waiting = ask(world.a, catalogue.helpdesk)
    finished = ask(world.a, catalogue.helpdesk, "Another question?")
    with tenant_context(world.a.tenant):
        Invocation.objects.filter(pk=finished.pk).update(status=MessageStatus.DONE)
    other = ask(world.b, catalogue.helpdesk)
    sent.clear()
    old_queue = world.a.tenant.tier.celery_queue

    with django_capture_on_commit_callbacks(execute=True):
        services.update_tenant(operator, world.a.tenant, deployment_model=DeploymentModel.SILO)
        assert sent == []  # not before the commit

    new_queue = f"tenant-{world.a.tenant.slug}"
    assert sent == [([world.a.tenant.pk, str(waiting.pk)], new_queue)]
    assert (queue_of(world.a, waiting), queue_of(world.a, finished)) == (new_queue, old_queue)
    assert queue_of(world.b, other) == world.b.tenant.tier.celery_queue
    with all_tenants("test: read the audit log"):
        entry = AuditLog.unscoped.get(tenant=world.a.tenant, action="tenant.turns_requeued")
    assert (entry.before, entry.after) == ({"queue": old_queue}, {"queue": new_queue, "turns": 1})


def test_a_turn_sent_to_its_new_queue_keeps_the_attempts_it_has_used(
    world, catalogue, operator, monkeypatch, settings, django_capture_on_commit_callbacks
):
    """A turn put back for its last retry, then moved: the copy in the new queue is its final
    attempt (the runtime still down: the turn fails), not the first of a fresh set of retries."""
    from agents import runtime_gateway
    from agents.tasks import MAX_RETRIES
    from tests.agents.helpers import FakeRuntime

    runtime = FakeRuntime(events=[runtime_gateway.TransientRuntimeError("connection refused")])
    monkeypatch.setattr("agents.runtime_gateway.invoke", runtime)
    waiting = ask(world.a, catalogue.helpdesk)
    with tenant_context(world.a.tenant):
        Invocation.objects.filter(pk=waiting.pk).update(attempts=MAX_RETRIES)  # three attempts put back
    settings.CELERY_TASK_ALWAYS_EAGER = True

    with django_capture_on_commit_callbacks(execute=True):
        services.update_tenant(operator, world.a.tenant, deployment_model=DeploymentModel.SILO)

    with tenant_context(world.a.tenant):
        turn = Invocation.objects.get(pk=waiting.pk)
    assert (turn.status, turn.attempts) == (MessageStatus.FAILED, MAX_RETRIES + 1)
    assert len(runtime.calls) == 1


def test_it_leaves_queued_turns_alone_when_the_queue_stays(
    world, catalogue, operator, sent, django_capture_on_commit_callbacks
):
    ask(world.a, catalogue.helpdesk)
    sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        services.update_tenant(operator, world.a.tenant, name="Renamed")
    assert sent == []


class Inspect:
    def __init__(self, answers):
        self.answers = answers

    def active_queues(self):
        return self.answers


def test_it_tells_whether_a_worker_consumes_a_queue(monkeypatch):
    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:6379/0")
    answers = {"w1@host": [{"name": "tier-basic"}], "w2@host": [{"name": "tenant-alpha"}]}
    monkeypatch.setattr(app.control, "inspect", lambda timeout: Inspect(answers))
    assert agent_services.queue_has_worker("tenant-alpha") is True
    assert agent_services.queue_has_worker("tenant-bravo") is False


def test_it_cannot_tell_when_no_worker_answers_or_the_broker_is_the_filesystem(monkeypatch):
    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:6379/0")
    monkeypatch.setattr(app.control, "inspect", lambda timeout: Inspect(None))
    assert agent_services.queue_has_worker("tenant-alpha") is None
    monkeypatch.setattr(app.conf, "broker_url", "filesystem://")
    assert agent_services.queue_has_worker("tenant-alpha") is None


def test_the_console_warns_when_no_worker_consumes_the_new_queue(client, world, operator, monkeypatch):
    monkeypatch.setattr(agent_services, "queue_has_worker", lambda queue: False)
    tenant = world.a.tenant
    client.force_login(operator)
    data = {"name": tenant.name, "tier": tenant.tier_id, "deployment_model": DeploymentModel.SILO}
    data["region"] = tenant.region
    response = client.post(reverse("operator:tenant_detail", kwargs={"slug": tenant.slug}), data, follow=True)
    shown = [(m.level_tag, m.message) for m in response.context["messages"]]
    assert (
        "warning",
        f"No worker consumes the queue tenant-{tenant.slug}: {tenant.name}'s turns will wait there "
        f"until one does (celery -A portal worker -Q tenant-{tenant.slug}).",
    ) in shown

"""Two operators approve the same shared version at the same moment, each request on its own
thread and database connection: it is published once, the other gets a 409 problem."""

from __future__ import annotations

import json
import threading

import pytest

from agents.models import Agent
from agents.registry import services
from agents.registry.models import AgentVersion
from tenants.context import all_tenants
from tenants.models import AuditLog
from tests.agents.test_conversation_race import on_a_thread, on_threads, shared_database, signed_in  # noqa: F401
from tests.factories import make_user
from tests.registry.helpers import as_operator, draft

pytestmark = pytest.mark.django_db(transaction=True)


def test_two_approvals_at_once_publish_once(world, operator, shared_database):  # noqa: F811
    reviewers = [make_user(f"reviewer{n}@portal.test", is_staff=True) for n in range(2)]
    agent, version = as_operator(lambda: services.create_agent(operator, draft(name="Translator", model_key="")))
    as_operator(lambda: services.submit(operator, version))
    clients = [signed_in(user) for user in reviewers]
    shared_database()
    answers, lock = [], threading.Lock()
    url = f"/api/v1/operator/registry/versions/{version.pk}/approve/"

    def approve(client):
        def run():
            response = client.post(url, json.dumps({}), content_type="application/json")
            with lock:
                answers.append((response.status_code, response.json()))

        return run

    errors = on_threads(*(approve(client) for client in clients))
    assert not errors, "\n".join(errors)

    assert sorted(code for code, _ in answers) == [200, 409]
    [refused] = [body for code, body in answers if code == 409]
    assert (refused["status"], refused["detail"]) == (409, "Version 1 is not waiting for a review.")

    def outcome():
        with all_tenants("test: the shared catalogue"):
            live = Agent.unscoped.get(pk=agent.pk)
            row = AgentVersion.unscoped.get(pk=version.pk)
            approvals = AuditLog.unscoped.filter(action="registry.version_approved").count()
            return (live.status, live.published_version, row.state, approvals, live.identity_id is not None)

    assert on_a_thread(outcome) == ("published", 1, "approved", 1, True)

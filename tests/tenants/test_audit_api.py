"""The audit log over the API: /api/v1/tenants/<slug>/audit-log/, read only, a page at a time,
with the audit log page's filters; owners and admins, and API clients with audit:read."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from tenants.context import tenant_context
from tenants.identity import tokens
from tenants.models import AuditLog
from tests.factories import client_token
from tests.portal.helpers import problem, validation_problem

pytestmark = pytest.mark.django_db

URL = "/api/v1/tenants/alpha/audit-log/"


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def entry(side, action: str, actor, days_ago: int = 0, **extra) -> AuditLog:
    with tenant_context(side.tenant):
        row = AuditLog(
            tenant=side.tenant,
            action=action,
            actor=actor,
            actor_email=actor.email,
            created_at=timezone.now() - dt.timedelta(days=days_ago),
            **extra,
        )
        row.save(force_insert=True)
    return row


@pytest.fixture
def log(world):
    return {
        "invited": entry(world.a, "member.invited", world.a.admin, days_ago=10, target_repr="new@alpha.test"),
        "role": entry(world.a, "member.role_changed", world.a.owner, days_ago=3, before={"role": "member"}),
        "client": entry(world.a, "api_client.created", world.a.admin, days_ago=0, after={"name": "Robot"}),
        "bravo": entry(world.b, "bravo.private_action", world.b.owner, target_repr="Bravo Inc secret"),
    }


def actions(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [row["action"] for row in response.json()["results"]]


def test_an_api_client_with_audit_read_reads_its_tenants_log_newest_first(client, world, log):
    token = client_token(world.a.tenant, world.a.admin, {"audit:read"})

    response = client.get(URL, **bearer(token))

    assert actions(response) == ["api_client.created", "member.role_changed", "member.invited"]
    body = response.json()
    assert body["count"] == 3
    newest = body["results"][0]
    assert newest["actor_email"] == "admin@alpha.test"
    assert newest["after"] == {"name": "Robot"}
    assert b"bravo" not in response.content.lower()


def test_it_filters_as_the_audit_log_page_does(client, world, log):
    token = client_token(world.a.tenant, world.a.admin, {"audit:read"})
    today = timezone.localdate()

    assert actions(client.get(URL, {"action": "member"}, **bearer(token))) == ["member.role_changed", "member.invited"]
    assert actions(client.get(URL, {"actor": "owner@alpha"}, **bearer(token))) == ["member.role_changed"]
    since = (today - dt.timedelta(days=5)).isoformat()
    assert actions(client.get(URL, {"since": since}, **bearer(token))) == ["api_client.created", "member.role_changed"]
    until = (today - dt.timedelta(days=5)).isoformat()
    assert actions(client.get(URL, {"until": until}, **bearer(token))) == ["member.invited"]
    # A filter naming another tenant is not a tenant's to use: it is ignored, B stays out.
    assert b"bravo" not in client.get(URL, {"tenant": "bravo"}, **bearer(token)).content.lower()


def test_it_pages(client, world, log):
    token = client_token(world.a.tenant, world.a.admin, {"audit:read"})

    first = client.get(URL, {"limit": 2}, **bearer(token)).json()
    second = client.get(first["next"], **bearer(token)).json()

    assert first["count"] == 3
    assert [r["action"] for r in first["results"] + second["results"]] == [
        "api_client.created",
        "member.role_changed",
        "member.invited",
    ]
    assert second["next"] is None


def test_a_bad_filter_is_a_400_problem_naming_it(client, world, log):
    token = client_token(world.a.tenant, world.a.admin, {"audit:read"})
    body = validation_problem(client.get(URL, {"since": "yesterday"}, **bearer(token)))
    assert "since" in body["errors"]


@pytest.mark.parametrize("role", ["owner", "admin"])
def test_owners_and_admins_read_it(client, world, log, role):
    token = tokens.issue_user_token(world.a.user(role), world.a.tenant)
    assert len(actions(client.get(URL, **bearer(token)))) == 3
    client.force_login(world.a.user(role))
    assert len(actions(client.get(URL))) == 3


@pytest.mark.parametrize("role", ["member", "billing"])
def test_members_and_the_billing_role_may_not(client, world, log, role):
    client.force_login(world.a.user(role))
    assert "audit.view" in problem(client.get(URL), 403)["detail"]


def test_a_token_without_audit_read_may_not(client, world, log):
    for token in (
        client_token(world.a.tenant, world.a.admin, {"tenant:read", "members:read"}),
        tokens.issue_user_token(world.a.admin, world.a.tenant, scopes=frozenset({"tenant:read"})),
    ):
        assert "audit:read" in problem(client.get(URL, **bearer(token)), 403)["detail"]


def test_another_tenants_log_is_not_found(client, world, log):
    token = client_token(world.a.tenant, world.a.admin, {"audit:read"})
    body = problem(client.get("/api/v1/tenants/bravo/audit-log/", **bearer(token)), 404)
    assert "bravo" not in str(body).lower()


def test_it_is_read_only(client, world, log):
    token = tokens.issue_user_token(world.a.owner, world.a.tenant)
    problem(client.post(URL, {}, content_type="application/json", **bearer(token)), 405)
    problem(client.delete(f"{URL}{log['role'].pk}/", **bearer(token)), 404)


def test_it_is_in_the_schema_with_its_filters_and_problems(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operation = schema["paths"]["/api/v1/tenants/{tenant_slug}/audit-log/"]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {"action", "actor", "since", "until", "limit", "offset"}
    assert {"200", "400", "401", "403", "404"} <= set(operation["responses"])

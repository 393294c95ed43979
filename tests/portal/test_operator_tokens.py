"""Operator API tokens: a staff member's own credential for /api/v1/operator/… (automation).

A token acts as its owner, narrowed to its scopes (403 without the route's), while it is
neither revoked nor expired and its owner is active staff; it is refused on every tenant
route and gateway (401), and tenant tokens stay refused on operator routes (404). Only a
digest is stored; the console shows the token once; what a token does is audited as its
owner with the token named."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest
from django.test import Client
from django.utils import timezone

from agents.registry.models import AgentVersion
from tenants.context import all_tenants
from tenants.identity import operator_tokens
from tenants.identity.models import OperatorToken
from tenants.identity.tokens import issue_user_token
from tenants.models import AuditLog
from tests.factories import make_user
from tests.portal.helpers import problem

API = "/api/v1/operator/"
BILLING = API + "billing/tenants/"
REGISTRY = API + "registry/"
NEW_AGENT = {"name": "Translator", "instructions": "Translate what you are given.", "offered_to_tiers": []}
GENERIC = "The access token is invalid or expired."


@pytest.fixture
def second_operator(db):
    return make_user("second-operator@portal.test", is_staff=True)


def token_of(user, *scopes, days=operator_tokens.DEFAULT_DAYS, name="Automation") -> tuple[OperatorToken, str]:
    return operator_tokens.create(user, name=name, scopes=scopes, days=days)


def bearer(raw: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def post(client, path: str, body: dict | None = None, **extra):
    return client.post(path, json.dumps(body or {}), content_type="application/json", **extra)


def entries(action: str) -> list[AuditLog]:
    with all_tenants("test"):
        return list(AuditLog.unscoped.filter(action=action).order_by("pk"))


# --- it works, per scope ------------------------------------------------------------------------


def test_it_reads_every_tenants_billing_with_a_billing_token(client, world, operator):
    token, raw = token_of(operator, operator_tokens.BILLING_READ)
    response = client.get(BILLING, **bearer(raw))
    assert response.status_code == 200, response.content
    assert {row["tenant"] for row in response.json()["results"]} == {"alpha", "bravo"}
    assert client.get(API + "invoices/", **bearer(raw)).status_code == 200
    read = entries("operator.viewed")[0]
    assert read.actor_id == operator.pk
    assert read.after["via_operator_token"] == {"id": token.pk, "name": "Automation", "prefix": token.prefix}


def test_it_drafts_a_shared_agent_with_a_catalogue_write_token_and_no_csrf_token(world, operator):
    token, raw = token_of(operator, operator_tokens.CATALOGUE_WRITE)
    strict = Client(enforce_csrf_checks=True)
    created = post(strict, REGISTRY + "agents/", NEW_AGENT, **bearer(raw))
    assert created.status_code == 201, created.content
    assert created.json()["author"] == operator.email
    [entry] = entries("registry.version_created")
    assert (entry.actor_id, entry.actor_email) == (operator.pk, operator.email)
    assert entry.after["via_operator_token"]["id"] == token.pk
    assert entry.after["via_operator_token"]["name"] == "Automation"


def test_a_session_write_still_needs_the_csrf_token(world, operator):
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(operator)
    problem(post(strict, REGISTRY + "agents/", NEW_AGENT), 403)


def test_a_token_without_the_routes_scope_gets_403_and_changes_nothing(client, world, operator):
    _, billing = token_of(operator, operator_tokens.BILLING_READ)
    _, catalogue_read = token_of(operator, operator_tokens.CATALOGUE_READ)
    _, catalogue_write = token_of(operator, operator_tokens.CATALOGUE_WRITE)

    assert "operator:catalogue:read" in problem(client.get(REGISTRY + "agents/", **bearer(billing)), 403)["detail"]
    assert client.get(REGISTRY + "agents/", **bearer(catalogue_read)).status_code == 200
    body = problem(post(client, REGISTRY + "agents/", NEW_AGENT, **bearer(catalogue_read)), 403)
    assert "operator:catalogue:write" in body["detail"]
    problem(client.patch(API + "skills/1/", "{}", content_type="application/json", **bearer(catalogue_read)), 403)
    problem(client.get(BILLING, **bearer(catalogue_write)), 403)
    with all_tenants("test"):
        assert not AgentVersion.unscoped.filter(name="Translator").exists()


# --- refused --------------------------------------------------------------------------------------


def test_an_expired_or_revoked_token_is_told_so_with_401(client, world, operator):
    expired, expired_raw = token_of(operator, operator_tokens.BILLING_READ)
    OperatorToken.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    revoked, revoked_raw = token_of(operator, operator_tokens.BILLING_READ)
    operator_tokens.revoke(operator, revoked.pk)

    assert "expired" in problem(client.get(BILLING, **bearer(expired_raw)), 401)["detail"]
    assert "revoked" in problem(client.get(BILLING, **bearer(revoked_raw)), 401)["detail"]


def test_a_token_whose_owner_is_no_longer_staff_is_answered_as_their_session_404(client, world, operator):
    _, raw = token_of(operator, operator_tokens.BILLING_READ)
    operator.is_staff = False
    operator.save(update_fields=["is_staff"])
    problem(client.get(BILLING, **bearer(raw)), 404)


def test_a_token_whose_owner_is_deactivated_is_invalid(client, world, operator):
    _, raw = token_of(operator, operator_tokens.BILLING_READ)
    operator.is_active = False
    operator.save(update_fields=["is_active"])
    assert problem(client.get(BILLING, **bearer(raw)), 401)["detail"] == GENERIC


def test_a_forged_or_malformed_operator_token_is_invalid_like_any_bad_token(client, world, operator):
    token, raw = token_of(operator, operator_tokens.BILLING_READ)
    forged = raw[:-4] + ("AAAA" if not raw.endswith("AAAA") else "BBBB")
    for bad in (forged, f"tpo_{token.key_id}_", "tpo_", "tpo_zzzzzzzzzzzz_" + "a" * 43):
        assert problem(client.get(BILLING, **bearer(bad)), 401)["detail"] == GENERIC


def test_a_tenant_access_token_still_gets_404_on_operator_routes(client, world, operator):
    from tests.factories import add_member

    add_member(world.a.tenant, operator, "owner")
    for user in (world.a.owner, operator):
        jwt = issue_user_token(user, world.a.tenant)
        problem(client.get(BILLING, **bearer(jwt)), 404)
        problem(post(client, REGISTRY + "agents/", NEW_AGENT, **bearer(jwt)), 404)


def test_an_operator_token_is_refused_on_tenant_routes_and_gateways_with_401(client, world, operator):
    _, raw = token_of(operator, *operator_tokens.SCOPES)
    for path in ("/api/v1/tenants/", "/api/v1/tenants/alpha/conversations/", "/api/v1/tenants/alpha/members/"):
        assert problem(client.get(path, **bearer(raw)), 401)["detail"] == GENERIC, path
    problem(post(client, "/api/v1/tenants/alpha/conversations/", {"agent": "helpdesk"}, **bearer(raw)), 401)
    for gateway in (
        "/api/v1/gateway/knowledge/retrieve",
        "/api/v1/gateway/tools/invoke",
        "/api/v1/gateway/memory/recall",
        "/api/v1/gateway/memory/remember",
        "/api/v1/gateway/mcp",
    ):
        # A body each gateway would take: the refusal is the credential's, not the input's.
        body = {"query": "x", "tool": "calculator", "input": {}, "content": "x", "jsonrpc": "2.0", "id": 1}
        response = post(client, gateway, {**body, "method": "tools/list"}, **bearer(raw))
        assert response.status_code == 401, (gateway, response.status_code, response.content)


# --- kept safely, used, audited -----------------------------------------------------------------


def test_only_a_digest_of_the_token_is_stored(world, operator):
    token, raw = token_of(operator, operator_tokens.BILLING_READ)
    secret = raw.split("_", 2)[2]
    assert raw.startswith(f"tpo_{token.key_id}_") and len(secret) >= 43
    with all_tenants("test"):
        row = OperatorToken.objects.filter(pk=token.pk).values().get()
        audit_rows = [json.dumps(e.after) for e in entries("operator_token.created")]
    assert row["token_hash"] == hashlib.sha256(raw.encode()).hexdigest()
    assert not any(secret in str(value) for value in row.values())
    assert not any(secret in text for text in audit_rows)


def test_it_expires_after_90_days_by_default_and_at_most_365(world, operator):
    token, _ = token_of(operator, operator_tokens.BILLING_READ)
    assert abs(token.expires_at - token.created_at - dt.timedelta(days=90)) < dt.timedelta(seconds=1)
    for days in (0, 366):
        with pytest.raises(operator_tokens.ServiceError):
            token_of(operator, operator_tokens.BILLING_READ, days=days)
    with pytest.raises(operator_tokens.ServiceError):
        token_of(operator, "tenant:read")
    with pytest.raises(operator_tokens.ServiceError):
        token_of(world.a.owner, operator_tokens.BILLING_READ)  # not staff


def test_last_used_at_is_written_at_most_once_a_minute(client, world, operator):
    token, raw = token_of(operator, operator_tokens.BILLING_READ)
    assert token.last_used_at is None
    client.get(BILLING, **bearer(raw))
    token.refresh_from_db()
    first = token.last_used_at
    assert first is not None
    client.get(BILLING, **bearer(raw))
    token.refresh_from_db()
    assert token.last_used_at == first
    OperatorToken.objects.filter(pk=token.pk).update(last_used_at=first - dt.timedelta(minutes=2))
    client.get(BILLING, **bearer(raw))
    token.refresh_from_db()
    assert token.last_used_at > first


def test_four_eyes_hold_for_tokens_and_the_approval_names_the_token(client, world, operator, second_operator):
    _, own = token_of(operator, operator_tokens.CATALOGUE_WRITE)
    reviewer_token, reviewer = token_of(second_operator, operator_tokens.CATALOGUE_WRITE, name="Review bot")
    version = post(client, REGISTRY + "agents/", NEW_AGENT, **bearer(own)).json()
    assert post(client, f"{REGISTRY}versions/{version['id']}/submit/", **bearer(own)).status_code == 200

    body = problem(post(client, f"{REGISTRY}versions/{version['id']}/approve/", **bearer(own)), 403)
    assert "someone else must review it" in body["detail"]
    approved = post(client, f"{REGISTRY}versions/{version['id']}/approve/", **bearer(reviewer))
    assert approved.status_code == 200, approved.content
    assert approved.json()["reviewed_by"] == second_operator.email
    [entry] = entries("registry.version_approved")
    assert entry.actor_id == second_operator.pk
    assert entry.after["via_operator_token"]["name"] == "Review bot"
    assert entry.after["via_operator_token"]["id"] == reviewer_token.pk
    assert entry.after["state"] == "approved"


# --- the console page ----------------------------------------------------------------------------


def test_the_page_creates_a_token_shows_it_once_and_lists_only_ones_own(client, world, operator, second_operator):
    token_of(second_operator, operator_tokens.BILLING_READ, name="Someone else's export")
    client.force_login(operator)
    page = client.get("/operator/api-tokens/").content.decode()
    assert "You have no API tokens yet." in page and "Someone else's export" not in page
    assert 'href="/operator/api-tokens/"' in client.get("/operator/").content.decode()

    shown = client.post(
        "/operator/api-tokens/new/",
        {"name": "Nightly export", "scopes": [operator_tokens.BILLING_READ], "days": "30"},
        REMOTE_ADDR="203.0.113.7",
    )
    assert shown.status_code == 200
    token = OperatorToken.objects.get(owner=operator)
    raw = shown.context["raw"]
    assert raw.startswith(token.prefix + "_") and raw in shown.content.decode()
    assert "only time the token is shown" in shown.content.decode()
    assert "no-cache" in shown["Cache-Control"] or "no-store" in shown["Cache-Control"]
    assert client.get(BILLING, **bearer(raw)).status_code == 200

    listed = client.get("/operator/api-tokens/").content.decode()
    assert "Nightly export" in listed and token.prefix in listed and raw not in listed
    assert "Someone else's export" not in listed
    [created] = [e for e in entries("operator_token.created") if e.actor_id == operator.pk]
    assert (created.actor_id, created.ip_address, created.after["scopes"]) == (
        operator.pk,
        "203.0.113.7",
        [operator_tokens.BILLING_READ],
    )


def test_the_page_refuses_bad_input_with_form_errors(client, world, operator):
    client.force_login(operator)
    for data in ({"name": "", "scopes": [operator_tokens.BILLING_READ], "days": "30"},
                 {"name": "x", "days": "30"},
                 {"name": "x", "scopes": ["tenant:read"], "days": "30"},
                 {"name": "x", "scopes": [operator_tokens.BILLING_READ], "days": "366"}):  # fmt: skip
        response = client.post("/operator/api-tokens/new/", data)
        assert response.status_code == 400, data
    assert not OperatorToken.objects.exists()


def test_it_revokes_ones_own_token_and_not_anothers(client, world, operator, second_operator):
    mine, raw = token_of(operator, operator_tokens.BILLING_READ)
    theirs, their_raw = token_of(second_operator, operator_tokens.BILLING_READ)
    client.force_login(operator)
    assert client.post(f"/operator/api-tokens/{theirs.pk}/revoke/").status_code == 302
    theirs.refresh_from_db()
    assert theirs.revoked_at is None

    response = client.post(f"/operator/api-tokens/{mine.pk}/revoke/", follow=True)
    mine.refresh_from_db()
    assert mine.revoked_at is not None
    assert "Revoked" in response.content.decode()
    problem(client.get(BILLING, **bearer(raw)), 401)
    assert client.get(BILLING, **bearer(their_raw)).status_code == 200
    [revoked] = entries("operator_token.revoked")
    assert (revoked.actor_id, revoked.target_id) == (operator.pk, str(mine.pk))


def test_the_page_is_404_for_non_staff(client, world):
    client.force_login(world.a.owner)
    assert client.get("/operator/api-tokens/").status_code == 404
    assert client.post("/operator/api-tokens/new/", {"name": "x"}).status_code == 404


def test_the_schema_documents_the_operator_token_on_operator_routes_only(client):
    schema = client.get("/api/schema/?format=json").json()
    assert schema["components"]["securitySchemes"]["operatorToken"]["scheme"] == "bearer"
    billing = schema["paths"]["/api/v1/operator/billing/tenants/"]["get"]["security"]
    assert {"operatorToken": []} in billing and {"bearerAuth": []} not in billing
    conversations = schema["paths"]["/api/v1/tenants/{tenant_slug}/conversations/"]["get"]["security"]
    assert {"operatorToken": []} not in conversations and {"bearerAuth": []} in conversations

"""The REST API with Bearer tokens: tenant from the token, scopes per method."""

from __future__ import annotations

from urllib.parse import urlencode

from tenants.identity import tokens
from tests.portal.helpers import problem
from tests.tenants.helpers import member_roles


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def client_token(client, api_client) -> str:
    api, secret = api_client
    data = urlencode({"grant_type": "client_credentials", "client_id": api.client_id, "client_secret": secret})
    response = client.post("/oauth/token", data=data, content_type="application/x-www-form-urlencoded")
    return response.json()["access_token"]


def test_a_user_token_reads_and_writes_its_own_tenant(client, world):
    token = tokens.issue_user_token(world.a.admin, world.a.tenant)
    assert client.get("/api/v1/tenants/alpha/members/", **bearer(token)).status_code == 200
    response = client.post(
        "/api/v1/tenants/alpha/invitations/",
        data={"email": "new@alpha.test", "role": "member"},
        content_type="application/json",
        **bearer(token),
    )
    assert response.status_code == 201


def test_a_token_lacking_the_scope_is_forbidden(client, world):
    token = tokens.issue_user_token(world.a.admin, world.a.tenant, scopes=frozenset({"tenant:read"}))
    response = client.get("/api/v1/tenants/alpha/members/", **bearer(token))
    assert response.status_code == 403
    assert "members:read" in response.json()["detail"]


def member_role_patch(client, world, token):
    member = world.a.memberships["member"]
    return client.patch(
        f"/api/v1/tenants/alpha/members/{member.pk}/",
        data={"role": "owner"},
        content_type="application/json",
        **bearer(token),
    )


def test_a_token_without_members_owners_cannot_hand_out_the_owner_role(client, world):
    token = tokens.issue_user_token(world.a.owner, world.a.tenant, scopes=frozenset({"members:write"}))

    body = problem(member_role_patch(client, world, token), 403)

    assert "members:owners" in body["detail"]
    assert member_roles(world.a.tenant)["member@alpha.test"] == "member"


def test_an_owners_token_with_members_owners_hands_out_the_owner_role(client, world):
    scopes = frozenset({"members:write", "members:owners"})
    token = tokens.issue_user_token(world.a.owner, world.a.tenant, scopes=scopes)

    assert member_role_patch(client, world, token).status_code == 200
    assert member_roles(world.a.tenant)["member@alpha.test"] == "owner"


def test_the_tenant_list_shows_only_the_tokens_tenant(client, world):
    from tests.factories import add_member

    add_member(world.b.tenant, world.a.admin, "member")
    token = tokens.issue_user_token(world.a.admin, world.a.tenant)
    slugs = [t["slug"] for t in client.get("/api/v1/tenants/", **bearer(token)).json()["results"]]
    assert slugs == ["alpha"]


def test_an_api_client_reads_but_cannot_change_members(client, world, api_client):
    token = client_token(client, api_client)
    listed = client.get("/api/v1/tenants/alpha/members/", **bearer(token))
    assert listed.status_code == 200
    assert {m["email"] for m in listed.json()["results"]} >= {"admin@alpha.test"}
    member_id = world.a.memberships["member"].pk
    response = client.delete(f"/api/v1/tenants/alpha/members/{member_id}/", **bearer(token))
    assert response.status_code == 403


def test_an_api_client_of_a_cannot_see_b(client, world, api_client):
    token = client_token(client, api_client)
    assert client.get("/api/v1/tenants/bravo/members/", **bearer(token)).status_code == 404


# --- tenant:read for an API client: its own tenant -------------------------------------------


def test_an_api_client_with_tenant_read_lists_exactly_its_own_tenant(client, world, api_client):
    token = client_token(client, api_client)

    body = client.get("/api/v1/tenants/", **bearer(token)).json()

    assert body["count"] == 1
    [alpha] = body["results"]
    assert alpha["slug"] == "alpha"
    assert alpha["role"] is None  # no person, no role
    assert alpha["tier"]["slug"] == world.a.tenant.tier.slug
    assert "requests_per_minute" in alpha["tier"]  # its limits
    assert isinstance(alpha["entitlements"], list)


def test_an_api_client_with_tenant_read_reads_its_own_tenant_and_not_another(client, world, api_client):
    token = client_token(client, api_client)

    own = client.get("/api/v1/tenants/alpha/", **bearer(token))
    assert own.status_code == 200
    assert own.json()["name"] == world.a.tenant.name

    foreign = client.get("/api/v1/tenants/bravo/", **bearer(token))
    assert b"Bravo" not in problem(foreign, 404)["detail"].encode()
    problem(client.get("/api/v1/tenants/no-such-tenant/", **bearer(token)), 404)


def test_a_token_without_tenant_read_cannot_read_the_tenant(client, world):
    from tests.factories import client_token as a_client_token

    for token in (
        a_client_token(world.a.tenant, world.a.admin, {"members:read"}),
        tokens.issue_user_token(world.a.admin, world.a.tenant, scopes=frozenset({"members:read"})),
    ):
        for url in ("/api/v1/tenants/", "/api/v1/tenants/alpha/"):
            assert "tenant:read" in problem(client.get(url, **bearer(token)), 403)["detail"]

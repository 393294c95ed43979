"""Access tokens: what they carry, how keys rotate, and every attack we know of."""

from __future__ import annotations

import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from django.conf import settings
from django.utils import timezone

from tenants.context import tenant_context
from tenants.identity import keys, tokens
from tenants.identity.models import KeyStatus, SigningKey
from tenants.models import Membership, TenantStatus
from tests.identity.conftest import claims_of, forge, now, sign_with_our_key

API = "/api/v1/tenants/alpha/members/"


def _valid_claims(world, **overrides) -> dict:
    claims = {
        "iss": settings.TOKEN_ISSUER,
        "sub": f"user:{world.a.admin.pk}",
        "aud": settings.TOKEN_AUDIENCE,
        "iat": now(),
        "nbf": now(),
        "exp": now() + 300,
        "jti": "j1",
        "tenant_id": str(world.a.tenant.pk),
        "scope": "members:read tenant:read",
        "roles": ["admin"],
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _assert_refused(client, token: str):
    """Refused by the validator and by the API, with nothing signed in."""
    with pytest.raises(tokens.InvalidToken):
        tokens.validate(token)
    response = client.get(API, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 401
    assert response.json()["title"] == "Authentication required"
    assert "sessionid" not in response.cookies
    assert response.wsgi_request.user.is_authenticated is False


def test_it_issues_tokens_with_the_three_claim_groups(world, user_token):
    header = jwt.get_unverified_header(user_token)
    claims = claims_of(user_token)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "ES256"
    assert {"iss", "sub", "aud", "exp", "iat", "nbf", "jti"} <= set(claims)
    assert claims["tenant_id"] == str(world.a.tenant.pk)
    assert claims["tier"] == world.a.tenant.tier.slug
    assert claims["roles"] == ["admin"]
    assert set(claims["scope"].split()) >= {"members:read", "members:write", "tenant:read"}
    assert "members:owners" not in claims["scope"].split()
    assert claims["entitlements"] == ["api_access", "chat"]
    assert claims["region"] == world.a.tenant.region
    assert claims["exp"] - claims["iat"] == 15 * 60


def test_it_validates_its_own_tokens(world, user_token):
    token = tokens.validate(user_token)
    assert token.user == world.a.admin
    assert token.tenant == world.a.tenant
    assert "members:read" in token.scopes


def test_validating_a_users_token_reads_tenant_tier_membership_and_user_in_one_query(world, user_token):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    tokens.validate(user_token)  # the signing key is cached from here on
    with CaptureQueriesContext(connection) as queries:
        token = tokens.validate(user_token)
    assert len(queries.captured_queries) == 1, [q["sql"] for q in queries.captured_queries]
    assert token.tenant.tier == world.a.tenant.tier
    assert token.membership.role == "admin" and token.membership.tenant_id == world.a.tenant.pk


@pytest.mark.parametrize(
    "header",
    [b'{"alg":"ES256","typ":"at+jwt","kid":["k1"]}', b'["alg","ES256"]', b'{"alg":', b"\xff\xfe", b""],
)
def test_a_header_that_is_not_a_proper_json_object_is_refused(client, world, user_token, header):
    import base64

    segment = base64.urlsafe_b64encode(header).rstrip(b"=").decode()
    _, payload, signature = user_token.split(".")
    _assert_refused(client, f"{segment}.{payload}.{signature}")


def test_a_deactivated_users_tokens_stop_at_once(client, world, user_token):
    world.a.admin.is_active = False
    world.a.admin.save(update_fields=["is_active"])
    _assert_refused(client, user_token)


def test_a_member_of_another_tenant_only_is_refused_here(client, world):
    # Signed by us for tenant A, but the subject is a member of B alone: no membership in A.
    token = sign_with_our_key(_valid_claims(world, sub=f"user:{world.b.admin.pk}"))
    _assert_refused(client, token)


def test_the_jwks_publishes_active_and_retiring_keys_only(client, world, user_token):
    old_kid = jwt.get_unverified_header(user_token)["kid"]
    new_key, _ = keys.rotate()
    kids = {k["kid"] for k in client.get("/.well-known/jwks.json").json()["keys"]}
    assert kids == {old_kid, new_key.kid}
    assert all(k["kty"] == "EC" and "d" not in k for k in client.get("/.well-known/jwks.json").json()["keys"])
    # Tokens from the retiring key stay valid until they expire.
    assert tokens.validate(user_token).user == world.a.admin
    assert jwt.get_unverified_header(tokens.issue_user_token(world.a.admin, world.a.tenant))["kid"] == new_key.kid


def test_a_retired_key_leaves_the_jwks_and_its_tokens_die(client, world, user_token):
    old_kid = jwt.get_unverified_header(user_token)["kid"]
    keys.rotate()
    SigningKey.objects.filter(kid=old_kid).update(retiring_since=timezone.now() - timezone.timedelta(hours=1))
    _, retired = keys.rotate()
    assert [k.kid for k in retired] == [old_kid]
    assert SigningKey.objects.get(kid=old_kid).status == KeyStatus.RETIRED
    kids = {k["kid"] for k in client.get("/.well-known/jwks.json").json()["keys"]}
    assert old_kid not in kids
    _assert_refused(client, user_token)


def test_the_rotate_command_prints_the_new_key(world, user_token):
    from io import StringIO

    from django.core.management import call_command

    out = StringIO()
    call_command("rotate_signing_keys", stdout=out)
    assert out.getvalue().startswith("active key: ")
    assert SigningKey.objects.filter(status=KeyStatus.ACTIVE).count() == 1


def test_the_private_key_is_stored_encrypted(world, user_token):
    row = SigningKey.objects.get(status=KeyStatus.ACTIVE)
    assert "PRIVATE KEY" not in row.private_key_encrypted


# --- attacks -------------------------------------------------------------------------


def test_alg_none_is_refused(client, world, user_token):
    header = {"alg": "none", "typ": "at+jwt", "kid": jwt.get_unverified_header(user_token)["kid"]}
    _assert_refused(client, forge(header, _valid_claims(world)))


def test_hs256_signed_with_our_public_key_is_refused(client, world, user_token):
    kid, private_key = keys.signing_key()
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    import hashlib
    import hmac

    header = {"alg": "HS256", "typ": "at+jwt", "kid": kid}
    from tests.identity.conftest import b64

    signing_input = f"{b64(header)}.{b64(_valid_claims(world))}".encode()
    signature = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
    _assert_refused(client, f"{signing_input.decode()}.{b64(signature)}")


def test_an_unknown_kid_is_refused(client, world):
    from cryptography.hazmat.primitives.asymmetric import ec

    attacker_key = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode(_valid_claims(world), attacker_key, algorithm="ES256", headers={"kid": "x", "typ": "at+jwt"})
    _assert_refused(client, token)


@pytest.mark.parametrize("header", ["jku", "x5u"])
def test_a_key_location_header_pointing_elsewhere_is_refused(client, world, header):
    token = sign_with_our_key(_valid_claims(world), **{header: "https://attacker.example/keys.json"})
    _assert_refused(client, token)


def test_a_wrong_audience_is_refused(client, world):
    _assert_refused(client, sign_with_our_key(_valid_claims(world, aud="someone-else")))


def test_a_wrong_issuer_is_refused(client, world):
    _assert_refused(client, sign_with_our_key(_valid_claims(world, iss="https://evil.example")))


def test_a_token_expired_by_leeway_plus_one_second_is_refused(client, world):
    expired = now() - settings.TOKEN_LEEWAY_SECONDS - 1
    _assert_refused(client, sign_with_our_key(_valid_claims(world, exp=expired, iat=expired - 60, nbf=expired - 60)))


def test_a_token_expired_within_the_leeway_is_accepted(world):
    exp = now() - settings.TOKEN_LEEWAY_SECONDS + 3
    assert tokens.validate(sign_with_our_key(_valid_claims(world, exp=exp))).user == world.a.admin


def test_a_token_not_yet_valid_is_refused(client, world):
    later = now() + settings.TOKEN_LEEWAY_SECONDS + 60
    _assert_refused(client, sign_with_our_key(_valid_claims(world, nbf=later, iat=later)))


@pytest.mark.parametrize("typ", [None, "JWT", "id_token+jwt", "rt+jwt"])
def test_a_missing_or_wrong_typ_is_refused(client, world, typ):
    _assert_refused(client, sign_with_our_key(_valid_claims(world), typ=typ))


def test_an_id_token_presented_as_an_access_token_is_refused(client, world):
    id_token_claims = _valid_claims(world, nonce="n-0S6_WzA2Mj", auth_time=now())
    _assert_refused(client, sign_with_our_key(id_token_claims, typ="JWT"))


def test_a_refresh_token_presented_as_an_access_token_is_refused(client, world):
    _assert_refused(client, sign_with_our_key(_valid_claims(world, token_use="refresh"), typ="rt+jwt"))


@pytest.mark.parametrize("claim", ["iss", "aud", "exp", "sub", "tenant_id", "scope"])
def test_a_token_missing_a_required_claim_is_refused(client, world, claim):
    _assert_refused(client, sign_with_our_key(_valid_claims(world, **{claim: None})))


def test_a_token_whose_tenant_id_was_edited_is_refused(client, world, user_token):
    header_b64, payload_b64, signature = user_token.split(".")
    import base64

    payload = json.loads(base64.urlsafe_b64decode(payload_b64 + "=="))
    payload["tenant_id"] = str(world.b.tenant.pk)
    from tests.identity.conftest import b64

    _assert_refused(client, f"{header_b64}.{b64(payload)}.{signature}")


def test_a_valid_token_for_tenant_a_is_not_found_on_tenant_bs_routes(client, world, user_token):
    response = client.get("/api/v1/tenants/bravo/members/", HTTP_AUTHORIZATION=f"Bearer {user_token}")
    assert response.status_code == 404
    assert "bravo.test" not in response.content.decode()


def _suspend(tenant, reason="unpaid invoice"):
    tenant.status = TenantStatus.SUSPENDED
    tenant.suspended_reason = reason
    tenant.save(update_fields=["status", "suspended_reason"])


def test_a_suspended_tenants_tokens_stop_at_once_with_a_problem_that_says_why(client, world, user_token):
    _suspend(world.a.tenant)
    with pytest.raises(tokens.TenantSuspended):
        tokens.validate(user_token)
    response = client.get(API, HTTP_AUTHORIZATION=f"Bearer {user_token}")
    assert response.status_code == 403
    body = response.json()
    assert body["reason"] == "tenant_suspended"
    assert body["detail"] == "Alpha Inc is suspended: unpaid invoice. Its tokens work again once it is reactivated."
    assert "results" not in body
    assert "sessionid" not in response.cookies


def test_a_suspended_tenants_client_tokens_get_the_same_problem(client, world, api_client):
    from tests.identity.test_api_bearer import client_token

    token = client_token(client, api_client)
    _suspend(world.a.tenant)
    response = client.get(API, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 403
    assert response.json()["detail"].startswith("Alpha Inc is suspended: unpaid invoice.")


def test_a_removed_member_of_a_suspended_tenant_is_not_told_it_is_suspended(client, world, user_token):
    _suspend(world.a.tenant)
    with tenant_context(world.a.tenant):
        Membership.objects.filter(user=world.a.admin).delete()
    _assert_refused(client, user_token)
    response = client.get(API, HTTP_AUTHORIZATION=f"Bearer {user_token}")
    assert "suspended" not in response.content.decode()


def test_a_reactivated_tenants_tokens_work_again(client, world, user_token):
    _suspend(world.a.tenant)
    world.a.tenant.status = TenantStatus.ACTIVE
    world.a.tenant.save(update_fields=["status"])
    assert client.get(API, HTTP_AUTHORIZATION=f"Bearer {user_token}").status_code == 200


def test_a_removed_members_tokens_stop_at_once(client, world, user_token):
    with tenant_context(world.a.tenant):
        Membership.objects.filter(user=world.a.admin).delete()
    _assert_refused(client, user_token)


def test_a_demoted_member_loses_the_scopes_at_once(client, world, user_token):
    with tenant_context(world.a.tenant):
        Membership.objects.filter(user=world.a.admin).update(role="member")
    assert "members:read" not in tokens.validate(user_token).scopes
    response = client.get(API, HTTP_AUTHORIZATION=f"Bearer {user_token}")
    assert response.status_code == 403


def test_garbage_bearer_values_are_refused(client, world):
    for value in ["x", "a.b.c", "...", "é.é.é", "a" * 10000]:
        response = client.get(API, HTTP_AUTHORIZATION=f"Bearer {value}")
        assert response.status_code == 401

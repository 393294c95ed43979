"""Interoperability: another JOSE library verifies our tokens from the JWKS it
fetches over HTTP, and a plain HTTP client performs an RFC 8693 exchange."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

import pytest
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from tenants.identity import tokens


@pytest.fixture
def live_issuer(live_server, settings):
    settings.TOKEN_ISSUER = live_server.url
    return live_server.url


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback test server)
        return json.loads(response.read())


def _post_form(url: str, fields: list[tuple[str, str]]) -> tuple[int, dict]:
    request = urllib.request.Request(  # noqa: S310
        url,
        data=urllib.parse.urlencode(fields).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_joserfc_verifies_our_tokens_with_the_jwks_fetched_over_http(live_issuer, world):
    token = tokens.issue_user_token(world.a.admin, world.a.tenant)
    metadata = _get_json(f"{live_issuer}/.well-known/oauth-authorization-server")
    key_set = KeySet.import_key_set(_get_json(metadata["jwks_uri"]))
    decoded = jose_jwt.decode(token, key_set, algorithms=["ES256"])
    assert decoded.header["typ"] == "at+jwt"
    assert decoded.claims["tenant_id"] == str(world.a.tenant.pk)
    registry = jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": live_issuer}, aud={"essential": True, "value": "tenant-portal-api"}
    )
    registry.validate(decoded.claims)


def test_a_plain_http_client_performs_an_rfc8693_exchange(live_issuer, world, agents):
    subject_token = tokens.issue_user_token(world.a.member, world.a.tenant)
    agent, secret = agents["allowed"]
    token_endpoint = _get_json(f"{live_issuer}/.well-known/oauth-authorization-server")["token_endpoint"]
    status, actor = _post_form(
        token_endpoint,
        [("grant_type", "client_credentials"), ("client_id", agent.client_id), ("client_secret", secret)],
    )
    assert status == 200
    status, body = _post_form(
        token_endpoint,
        [
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
            ("subject_token", subject_token),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:access_token"),
            ("actor_token", actor["access_token"]),
            ("actor_token_type", "urn:ietf:params:oauth:token-type:access_token"),
            ("audience", "agent-runtime"),
            ("scope", "kb:read"),
        ],
    )
    assert status == 200, body
    assert set(body) == {"access_token", "issued_token_type", "token_type", "expires_in", "scope"}
    assert body["issued_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
    key_set = KeySet.import_key_set(_get_json(f"{live_issuer}/.well-known/jwks.json"))
    claims = jose_jwt.decode(body["access_token"], key_set, algorithms=["ES256"]).claims
    assert claims["act"]["sub"] == agent.subject
    assert claims["sub"] == f"user:{world.a.member.pk}"

    status, error = _post_form(
        token_endpoint,
        [
            ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
            ("subject_token", subject_token),
            ("subject_token_type", "urn:ietf:params:oauth:token-type:access_token"),
            ("actor_token", actor["access_token"]),
            ("actor_token_type", "urn:ietf:params:oauth:token-type:access_token"),
            ("scope", "members:write"),
        ],
    )
    assert status == 400
    assert error["error"] == "invalid_scope"

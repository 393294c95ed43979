"""Token verification in the runtime: the good token, and every way a token must be refused."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from jwt.utils import base64url_encode

from agents.runtime.auth import CachingKeyProvider, CallableKeyProvider, HttpKeyProvider, TokenVerifier, parse_jwks
from agents.runtime.contract import RequestRefused
from tests.runtime import helpers


def _verify(verifier: TokenVerifier, token: str, tenant_id: str = helpers.TENANT_ID, **tenant_overrides):
    return verifier.authorize(verifier.decode(token), helpers.tenant(tenant_id, **tenant_overrides))


def _refused(verifier: TokenVerifier, token: str, **kwargs) -> RequestRefused:
    with pytest.raises(RequestRefused) as caught:
        _verify(verifier, token, **kwargs)
    return caught.value


def test_it_accepts_an_act_on_behalf_token_for_the_tenant_in_the_headers(verifier, token):
    caller = _verify(verifier, token)
    assert caller.tenant.tenant_id == helpers.TENANT_ID
    assert caller.subject == "user:17"
    assert caller.actor == helpers.AGENT_SUBJECT
    assert caller.scopes == {"agents:invoke", "kb:read"}


def test_it_reads_the_whole_act_chain_outermost_first(verifier, signing_key):
    token = helpers.mint(signing_key, act={"sub": "agent:b", "act": {"sub": "agent:a"}})
    assert _verify(verifier, token).actors == ("agent:b", "agent:a")


def test_it_refuses_a_token_for_another_tenant_than_the_header(verifier, token):
    refused = _refused(verifier, token, tenant_id=helpers.OTHER_TENANT_ID)
    assert (refused.status, refused.reason) == (403, "tenant_mismatch")


def test_it_refuses_a_token_without_an_act_claim(verifier, signing_key):
    refused = _refused(verifier, helpers.mint(signing_key, act=None))
    assert (refused.status, refused.reason) == (403, "act_missing")


def test_it_refuses_an_act_claim_without_a_subject(verifier, signing_key):
    refused = _refused(verifier, helpers.mint(signing_key, act={"client_id": "x"}))
    assert (refused.status, refused.reason) == (403, "act_missing")


def test_it_refuses_a_token_for_another_audience(verifier, signing_key):
    refused = _refused(verifier, helpers.mint(signing_key, aud="tenant-portal-api"))
    assert (refused.status, refused.reason) == (401, "audience")


def test_it_refuses_a_token_from_another_issuer(verifier, signing_key):
    refused = _refused(verifier, helpers.mint(signing_key, iss="https://evil.test"))
    assert (refused.status, refused.reason) == (401, "issuer")


def test_it_refuses_an_expired_token(verifier, signing_key):
    now = int(time.time())
    refused = _refused(verifier, helpers.mint(signing_key, iat=now - 600, nbf=now - 600, exp=now - 120))
    assert (refused.status, refused.reason) == (401, "expired")


def test_it_allows_a_little_clock_skew(verifier, signing_key):
    now = int(time.time())
    token = helpers.mint(signing_key, iat=now - 600, nbf=now + 5, exp=now - 5)
    assert _verify(verifier, token).subject == "user:17"


def test_it_refuses_a_token_that_is_not_yet_valid(verifier, signing_key):
    refused = _refused(verifier, helpers.mint(signing_key, nbf=int(time.time()) + 600))
    assert (refused.status, refused.reason) == (401, "not_yet_valid")


def test_it_refuses_a_token_missing_a_required_claim(verifier, signing_key):
    refused = _refused(verifier, helpers.mint(signing_key, tenant_id=None))
    assert (refused.status, refused.reason) == (401, "invalid")


def test_it_refuses_alg_none(verifier):
    unsigned = jwt.encode(helpers.claims(), key=None, algorithm="none", headers={"kid": "key-1", "typ": "at+jwt"})
    refused = _refused(verifier, unsigned)
    assert (refused.status, refused.reason) == (401, "alg")


def test_it_refuses_an_hmac_token_keyed_with_the_public_key(verifier, signing_key):
    # The classic key-confusion forgery: HS256 with the (public) PEM as the secret.
    public_pem = signing_key.private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "kid": "key-1", "typ": "at+jwt"}
    signing_input = b".".join(
        base64url_encode(json.dumps(part, separators=(",", ":")).encode()) for part in (header, helpers.claims())
    )
    signature = base64url_encode(hmac.new(public_pem, signing_input, hashlib.sha256).digest())
    refused = _refused(verifier, (signing_input + b"." + signature).decode())
    assert (refused.status, refused.reason) == (401, "alg")


def test_it_refuses_a_token_signed_by_a_key_outside_the_jwks(verifier):
    impostor = helpers.SigningKey(kid="key-1")  # same kid, different key
    refused = _refused(verifier, helpers.mint(impostor))
    assert (refused.status, refused.reason) == (401, "invalid")


def test_it_refuses_a_token_that_is_not_an_access_token(verifier, signing_key):
    refused = _refused(verifier, helpers.mint(signing_key, headers={"typ": "JWT"}))
    assert (refused.status, refused.reason) == (401, "typ")


def test_it_refuses_a_token_that_names_where_its_key_lives(verifier, signing_key):
    refused = _refused(verifier, helpers.mint(signing_key, headers={"jku": "https://evil.test/jwks"}))
    assert (refused.status, refused.reason) == (401, "key_location_header")


def test_it_refuses_a_missing_or_malformed_token(verifier):
    with pytest.raises(RequestRefused) as missing:
        verifier.decode(None)
    with pytest.raises(RequestRefused) as malformed:
        verifier.decode("not-a-jwt")
    assert (missing.value.status, missing.value.code) == (401, "missing_token")
    assert (malformed.value.status, malformed.value.reason) == (401, "malformed")


def test_it_refuses_headers_that_claim_more_than_the_token(verifier, token):
    tier = _refused(verifier, token, tier="premium")
    entitlements = _refused(verifier, token, entitlements=("agents", "knowledge", "tools"))
    assert (tier.status, tier.reason) == (403, "tier_mismatch")
    assert (entitlements.status, entitlements.reason) == (403, "entitlements_mismatch")


def test_it_refetches_the_jwks_once_for_an_unknown_kid(verifier, jwks, signing_key):
    _verify(verifier, helpers.mint(signing_key))
    assert jwks.fetches == 1
    rotated = helpers.SigningKey(kid="key-2")
    jwks.keys.append(rotated)  # the portal rotated its key

    assert _verify(verifier, helpers.mint(rotated)).subject == "user:17"
    assert jwks.fetches == 2
    _verify(verifier, helpers.mint(rotated))
    assert jwks.fetches == 2


def test_it_bounds_refetches_for_kids_nobody_knows(verifier, jwks):
    stranger = helpers.SigningKey(kid="forged")
    for _ in range(5):
        assert _refused(verifier, helpers.mint(stranger)).reason == "unknown_kid"
    assert jwks.fetches == 2  # the first fetch, then one refetch for the unknown kid


def test_it_refetches_for_an_unknown_kid_again_after_the_interval():
    now = [1000.0]
    fetches = []

    def fetch():
        fetches.append(now[0])
        return {"keys": []}

    provider = CachingKeyProvider(fetch, min_refetch_interval=30, clock=lambda: now[0])
    for _ in range(3):
        assert provider.get_key("a") is None
    assert len(fetches) == 2  # the first fetch, one refetch for the unknown kid
    now[0] += 31
    provider.get_key("a")
    assert len(fetches) == 3


def test_it_keeps_cached_keys_when_a_refresh_fails(signing_key):
    now = [0.0]
    source = {"fail": False}

    def fetch():
        if source["fail"]:
            raise OSError("portal down")
        return {"keys": [signing_key.jwk]}

    provider = CachingKeyProvider(fetch, ttl=10, clock=lambda: now[0])
    assert provider.get_key("key-1") is not None
    source["fail"] = True
    now[0] = 60
    assert provider.get_key("key-1") is not None


def test_it_answers_503_when_the_jwks_cannot_be_fetched(token):
    dead = TokenVerifier(HttpKeyProvider("http://127.0.0.1:9/jwks.json", timeout=1), issuer=helpers.ISSUER)
    refused = _refused(dead, token)
    assert (refused.status, refused.code) == (503, "keys_unavailable")


def test_it_takes_keys_from_a_callable(signing_key, token):
    verifier = TokenVerifier(CallableKeyProvider(lambda: {"keys": [signing_key.jwk]}), issuer=helpers.ISSUER)
    assert _verify(verifier, token).actor == helpers.AGENT_SUBJECT


def test_it_ignores_symmetric_and_encryption_keys_in_a_jwks(signing_key):
    document = {
        "keys": [
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {**signing_key.jwk, "kid": "enc", "use": "enc"},
            {"kty": "EC", "kid": "broken"},
            signing_key.jwk,
        ]
    }
    keys = parse_jwks(document)
    assert list(keys) == ["key-1"]
    assert keys["key-1"].algorithm == "ES256"

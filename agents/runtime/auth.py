"""How a runtime decides whom it works for: verify the act-on-behalf token.

The runtime sees the tenant only through the custom headers and the bearer
token (architecture §5.3), and the headers are written by whoever calls it. So
nothing runs until the token proves them:

* the signature checks out against a key from the portal's JWKS, with the
  algorithm taken from that key (never from the token: that is how ``alg:
  none`` and HMAC-with-a-public-key forgeries get in), and no key-location
  headers (``jku``, ``x5u``, ``jwk``, ``x5c``) honoured;
* ``typ`` is ``at+jwt`` (RFC 9068), so an ID token or any other JWT the portal
  signs cannot be replayed as an access token;
* ``iss``, ``aud`` (``agent-runtime``), ``exp`` and ``nbf`` hold, with a small leeway;
* the ``tenant_id`` claim equals the Tenant-Id header, and the tier, region and
  entitlements headers claim nothing the token does not;
* the token carries an ``act`` claim (RFC 8693): the portal exchanged the
  user's token for one that names the agent, rather than forwarding the user's
  own token (impersonation), so a leaked runtime token is useless elsewhere.

Failures are :class:`~agents.runtime.contract.RequestRefused`: 401 when the
token is missing or invalid, 403 when it is valid but does not cover the
request, 503 when the keys cannot be fetched (the caller should retry).

Keys come from a :class:`KeyProvider`: :class:`HttpKeyProvider` fetches
``RUNTIME_JWKS_URL`` for a standalone runtime; :class:`CallableKeyProvider` wraps
a function the portal supplies for the in-process runtime. Both cache the key
set and refetch it once when a token names an unknown ``kid`` (a key rotation),
at most once per ``min_refetch_interval`` so a stream of forged kids cannot turn
the runtime into a JWKS hammer.

This module does not import Django: the runtime runs as its own process.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import jwt

from agents.runtime.contract import RequestRefused, TenantContext

logger = logging.getLogger(__name__)

ACCESS_TOKEN_TYPES = ("at+jwt", "application/at+jwt")
DEFAULT_AUDIENCE = "agent-runtime"
DEFAULT_LEEWAY_SECONDS = 30
# Asymmetric algorithms only: a symmetric key in a *public* key set would let
# anybody who can read the JWKS mint tokens.
ALLOWED_ALGORITHMS = frozenset(
    {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"}
)
FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c", "crit")
REQUIRED_CLAIMS = ["iss", "sub", "aud", "exp", "iat", "nbf", "tenant_id"]
MAX_TOKEN_LENGTH = 8192
MAX_KEYS = 32
MAX_JWKS_BYTES = 256 * 1024
MAX_ACT_DEPTH = 10


class KeySourceUnavailable(Exception):
    """The key set could not be fetched and no usable copy is cached."""


@dataclass(frozen=True)
class VerificationKey:
    kid: str
    algorithm: str
    key: Any  # a cryptography public key


class KeyProvider(Protocol):
    def get_key(self, kid: str) -> VerificationKey | None:
        """The key for `kid`, or None if the key set does not have it. May raise KeySourceUnavailable."""


def parse_jwks(document: Any) -> dict[str, VerificationKey]:
    """kid → key for every usable signing key in a JWKS document; the rest is skipped."""
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise KeySourceUnavailable("the key set is not a JWKS document")
    keys: dict[str, VerificationKey] = {}
    for jwk in document["keys"][:MAX_KEYS]:
        if not isinstance(jwk, Mapping) or not isinstance(jwk.get("kid"), str) or not jwk["kid"]:
            continue
        if jwk.get("kty") == "oct" or jwk.get("use", "sig") != "sig":
            continue
        try:
            parsed = jwt.PyJWK(dict(jwk))
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError) as exc:
            logger.warning("skipping JWKS key %r: %s", jwk.get("kid"), exc)
            continue
        if parsed.algorithm_name not in ALLOWED_ALGORITHMS:
            continue
        keys[jwk["kid"]] = VerificationKey(kid=jwk["kid"], algorithm=parsed.algorithm_name, key=parsed.key)
    return keys


class CachingKeyProvider:
    """A key set fetched by `fetch`, cached for `ttl` seconds, refetched on an unknown kid.

    * An unknown kid (the portal rotated its key) triggers one refetch, at most
      once per `min_refetch_interval`, unless the set was fetched for this very call.
    * A failed fetch keeps the previous keys (a JWKS blip must not log every
      tenant out) and is not retried for `failure_backoff` seconds; only a
      provider that never fetched successfully raises KeySourceUnavailable.
    """

    def __init__(
        self,
        fetch: Callable[[], Any],
        *,
        ttl: float = 300.0,
        min_refetch_interval: float = 30.0,
        failure_backoff: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._fetch = fetch
        self.ttl = ttl
        self.min_refetch_interval = min_refetch_interval
        self.failure_backoff = failure_backoff
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, VerificationKey] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._failed_at: float | None = None  # last failed fetch, cleared by a success
        self._kid_refetch_at: float | None = None  # last refetch caused by an unknown kid
        self.fetch_count = 0

    def _refresh(self, now: float) -> None:
        self.fetch_count += 1
        try:
            keys = parse_jwks(self._fetch())
        except Exception as exc:  # any failure of the source: keep what we have
            self._failed_at = now
            if self._fetched_at is None:
                raise KeySourceUnavailable(str(exc)) from exc
            logger.warning("JWKS refresh failed, keeping %d cached keys: %s", len(self._keys), exc)
            return
        self._keys = keys
        self._fetched_at = now
        self._failed_at = None

    def _may_try(self, now: float) -> bool:
        return self._failed_at is None or now - self._failed_at >= self.failure_backoff

    def get_key(self, kid: str) -> VerificationKey | None:
        with self._lock:
            now = self._clock()
            refreshed = False
            if (self._fetched_at is None or now - self._fetched_at >= self.ttl) and self._may_try(now):
                self._refresh(now)
                refreshed = True
            if self._fetched_at is None:  # never fetched, and the last attempt failed moments ago
                raise KeySourceUnavailable("the key set could not be fetched")
            key = self._keys.get(kid)
            if (
                key is None
                and not refreshed
                and self._may_try(now)
                and (self._kid_refetch_at is None or now - self._kid_refetch_at >= self.min_refetch_interval)
            ):
                self._kid_refetch_at = now
                self._refresh(now)
                key = self._keys.get(kid)
            return key


class HttpKeyProvider(CachingKeyProvider):
    """The portal's JWKS over HTTP(S) (``RUNTIME_JWKS_URL``), for a standalone runtime."""

    def __init__(self, url: str, *, timeout: float = 5.0, **kwargs):
        if not url.startswith(("https://", "http://")):
            raise ValueError("the JWKS URL must be http(s)")
        self.url = url
        self.timeout = timeout
        super().__init__(self._download, **kwargs)

    def _download(self) -> Any:
        request = urllib.request.Request(self.url, headers={"Accept": "application/json"})  # noqa: S310 (scheme checked)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                body = response.read(MAX_JWKS_BYTES + 1)
        except (urllib.error.URLError, OSError) as exc:
            raise KeySourceUnavailable(f"GET {self.url}: {exc}") from exc
        if len(body) > MAX_JWKS_BYTES:
            raise KeySourceUnavailable("the key set is too large")
        return json.loads(body)


class CallableKeyProvider(CachingKeyProvider):
    """Keys from a function returning a JWKS document (the in-process runtime: the portal's ``keys.jwks``)."""

    def __init__(self, jwks: Callable[[], Any], *, ttl: float = 30.0, min_refetch_interval: float = 1.0, **kwargs):
        super().__init__(jwks, ttl=ttl, min_refetch_interval=min_refetch_interval, **kwargs)


@dataclass(frozen=True)
class Caller:
    """A verified invocation: the tenant the headers name (now proven) and who acts for whom."""

    tenant: TenantContext
    subject: str  # the user (or client) the agent acts for
    actors: tuple[str, ...]  # the act chain, outermost (the acting agent) first
    scopes: frozenset[str] = frozenset()
    claims: Mapping[str, Any] = field(default_factory=dict)
    # The verified act-on-behalf token itself, for calls to the portal's gateway APIs
    # (knowledge retrieval) made on the caller's behalf; never logged.
    token: str = field(default="", repr=False)

    @property
    def actor(self) -> str:
        return self.actors[0]


def _unauthorized(reason: str, message: str = "The access token is not valid.") -> RequestRefused:
    return RequestRefused(401, "invalid_token", message, reason=reason)


def _forbidden(reason: str, message: str) -> RequestRefused:
    return RequestRefused(403, "forbidden", message, reason=reason)


class TokenVerifier:
    def __init__(
        self,
        keys: KeyProvider,
        *,
        issuer: str,
        audience: str = DEFAULT_AUDIENCE,
        leeway: float = DEFAULT_LEEWAY_SECONDS,
    ):
        if not issuer:
            raise ValueError("an issuer is required")
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway

    def decode(self, token: str | None) -> dict:
        """Signature and registered claims. Raises RequestRefused (401, or 503 without keys)."""
        if not token:
            raise RequestRefused(401, "missing_token", "A bearer token is required.", reason="missing")
        if token.count(".") != 2 or len(token) > MAX_TOKEN_LENGTH:
            raise _unauthorized("malformed")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise _unauthorized("malformed")
        if any(name in header for name in FORBIDDEN_HEADERS):
            raise _unauthorized("key_location_header")
        if str(header.get("typ", "")).lower() not in ACCESS_TOKEN_TYPES:
            raise _unauthorized("typ", "The token is not an access token.")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise _unauthorized("no_kid")
        try:
            key = self.keys.get_key(kid)
        except KeySourceUnavailable as exc:
            logger.error("cannot verify tokens: %s", exc)
            raise RequestRefused(503, "keys_unavailable", "The runtime cannot verify tokens right now.")
        if key is None:
            raise _unauthorized("unknown_kid")
        if header.get("alg") != key.algorithm:
            raise _unauthorized("alg")
        try:
            return jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],  # from the key set, never from the token
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": REQUIRED_CLAIMS, "verify_signature": True},
            )
        except jwt.ExpiredSignatureError:
            raise _unauthorized("expired", "The access token has expired.")
        except jwt.ImmatureSignatureError:
            raise _unauthorized("not_yet_valid")
        except jwt.InvalidAudienceError:
            raise _unauthorized("audience")
        except jwt.InvalidIssuerError:
            raise _unauthorized("issuer")
        except jwt.PyJWTError as exc:
            logger.info("token refused: %s: %s", exc.__class__.__name__, exc)
            raise _unauthorized("invalid")

    def authorize(self, claims: Mapping[str, Any], tenant: TenantContext) -> Caller:
        """Check verified claims against the tenant headers. Raises RequestRefused (403)."""
        if claims.get("tenant_id") != tenant.tenant_id:
            raise _forbidden("tenant_mismatch", "The token was not issued for this tenant.")
        for claim, value in (("tier", tenant.tier), ("region", tenant.region)):
            if value and claim in claims and claims[claim] != value:
                raise _forbidden(f"{claim}_mismatch", f"The {claim} header does not match the token.")
        granted = claims.get("entitlements")
        if isinstance(granted, list) and not set(tenant.entitlements) <= {str(e) for e in granted}:
            raise _forbidden("entitlements_mismatch", "The entitlements header claims more than the token.")
        actors = []
        act = claims.get("act")
        while isinstance(act, Mapping) and len(actors) < MAX_ACT_DEPTH:
            sub = act.get("sub")
            if not isinstance(sub, str) or not sub:
                break
            actors.append(sub)
            act = act.get("act")
        if not actors:
            raise _forbidden("act_missing", "An act-on-behalf token (with an act claim) is required.")
        scope = claims.get("scope", "")
        return Caller(
            tenant=tenant,
            subject=str(claims["sub"]),
            actors=tuple(actors),
            scopes=frozenset(scope.split()) if isinstance(scope, str) else frozenset(),
            claims=dict(claims),
        )

"""Access tokens: issue them, and the one function that validates them.

Claims come in three groups:
* security: iss sub aud exp iat nbf jti (and client_id, RFC 9068);
* tenant:   tenant_id tier roles scope entitlements;
* request:  session_id agent_id region invocation_id — where they apply (a chat turn's
            token names its conversation's runtime session and the turn);
plus `act` (RFC 8693) on exchanged tokens, nested for further hops, and on an API
client's tokens `credentials_generation`: the generation of the client's credentials
they were issued under (exchanged tokens keep it), so replacing the secret ends them.

Validation trusts nothing in the token's header but the `kid`: the algorithm
comes from our key, `jku`/`x5u`/`jwk`/`x5c` headers are refused outright, and
the tenant and subject are re-checked against the database on every call, so a
suspended tenant or a removed member is refused at once, not at expiry.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

import jwt
from django.conf import settings
from django.utils import timezone

from tenants import entitlements
from tenants.context import tenant_context
from tenants.identity import keys
from tenants.identity import scopes as scope_lib
from tenants.models import Membership, Tenant, User

ACCESS_TOKEN_TYP = "at+jwt"
# An API client's tokens: the generation of its credentials they were issued under.
CREDENTIALS_GENERATION = "credentials_generation"
# Headers that would let a token choose where its verification key comes from.
FORBIDDEN_HEADERS = ("jku", "x5u", "jwk", "x5c", "crit")
REQUIRED_CLAIMS = ["iss", "sub", "aud", "exp", "iat", "nbf", "jti", "tenant_id", "scope"]


class InvalidToken(Exception):
    """The token is not acceptable. `reason` is for logs, never for the caller."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class TenantSuspended(InvalidToken):
    """A sound token of a live subject whose tenant is suspended: still refused, and
    the caller may be told why (the tenant's name and the operator's reason), since
    the subject is a member who would see the same on the tenant's pages."""

    def __init__(self, tenant: Tenant):
        super().__init__("tenant suspended")
        self.tenant = tenant

    @property
    def message(self) -> str:
        reason = self.tenant.suspended_reason or "contact the provider"
        return f"{self.tenant.name} is suspended: {reason}. Its tokens work again once it is reactivated."


@dataclass(frozen=True)
class AccessToken:
    claims: dict
    tenant: Tenant
    scopes: frozenset[str]
    user: User | None = None  # the subject, when it is a person
    membership: Membership | None = None
    client: object | None = None  # ApiClient, when the subject is a machine client
    actors: tuple[str, ...] = field(default_factory=tuple)  # act chain, outermost first

    @property
    def subject(self) -> str:
        return self.claims["sub"]

    @property
    def actor(self) -> str | None:
        return self.actors[0] if self.actors else None


def issuer() -> str:
    return settings.TOKEN_ISSUER


def _base_claims(*, sub: str, tenant: Tenant, aud: str | list[str], scopes, lifetime: int, client_id: str):
    now = timezone.now()
    return {
        "iss": issuer(),
        "sub": sub,
        "aud": aud,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=lifetime)).timestamp()),
        "jti": uuid.uuid4().hex,
        "client_id": client_id,
        "tenant_id": str(tenant.pk),
        "tier": tenant.tier.slug,
        "scope": scope_lib.format_scope(scopes),
        "entitlements": sorted(entitlements.effective_entitlements(tenant)),
        "region": tenant.region,
    }


def sign(claims: dict) -> str:
    kid, private_key = keys.signing_key()
    return jwt.encode(claims, private_key, algorithm=keys.ALGORITHM, headers={"kid": kid, "typ": ACCESS_TOKEN_TYP})


def user_subject(
    user: User,
    tenant: Tenant,
    *,
    audience: str | None = None,
    scopes: frozenset[str] | None = None,
    session_id: str | None = None,
    lifetime: int | None = None,
) -> AccessToken:
    """What `validate()` would return for a fresh token of this member, without the
    round trip through a signature: the member's live role bounds the scopes."""
    with tenant_context(tenant):
        membership = Membership.objects.select_related("user").filter(user=user).first()
    if membership is None or not membership.user.is_active:
        raise InvalidToken("not a member")
    return member_subject(
        tenant,
        user.pk,
        membership.role,
        user=membership.user,
        membership=membership,
        audience=audience,
        scopes=scopes,
        session_id=session_id,
        lifetime=lifetime,
    )


def member_subject(
    tenant: Tenant,
    user_id: int,
    role: str,
    *,
    user: User | None = None,
    membership: Membership | None = None,
    audience: str | None = None,
    scopes: frozenset[str] | None = None,
    session_id: str | None = None,
    invocation_id: str | None = None,
    lifetime: int | None = None,
) -> AccessToken:
    """`user_subject()` for a caller that has just read the member's live role itself (an
    active user, a membership of this tenant): the chat worker reads it together with the
    turn's other facts in one statement, and names the turn (`invocation_id`)."""
    granted = scope_lib.scopes_for_role(role)
    granted = granted if scopes is None else (scopes & granted)
    claims = _base_claims(
        sub=f"user:{user_id}",
        tenant=tenant,
        aud=audience or settings.TOKEN_AUDIENCE,
        scopes=granted,
        lifetime=lifetime or settings.TOKEN_LIFETIME_SECONDS,
        client_id="portal",
    )
    claims["roles"] = [role]
    if session_id:
        claims["session_id"] = session_id
    if invocation_id:
        claims["invocation_id"] = invocation_id
    return AccessToken(claims=claims, tenant=tenant, scopes=granted, user=user, membership=membership, actors=())


def issue_user_token(
    user: User,
    tenant: Tenant,
    *,
    audience: str | None = None,
    scopes: frozenset[str] | None = None,
    session_id: str | None = None,
    lifetime: int | None = None,
) -> str:
    """A token for a member, with their role's scopes (or a subset)."""
    subject = user_subject(user, tenant, audience=audience, scopes=scopes, session_id=session_id, lifetime=lifetime)
    return sign(subject.claims)


def issue_client_token(client, scopes: frozenset[str]) -> str:
    claims = _base_claims(
        sub=f"client:{client.client_id}",
        tenant=client.tenant,
        aud=settings.TOKEN_AUDIENCE,
        scopes=scopes,
        lifetime=settings.TOKEN_LIFETIME_SECONDS,
        client_id=client.client_id,
    )
    claims["roles"] = []
    claims[CREDENTIALS_GENERATION] = client.credentials_generation
    return sign(claims)


def decode(token: str, *, audience: str | list[str] | None = None) -> dict:
    """Verify signature and registered claims; no database checks. Raises InvalidToken."""
    if not isinstance(token, str) or token.count(".") != 2 or len(token) > 8192:
        raise InvalidToken("malformed")
    header = _unverified_header(token)
    _check_header(header)
    key = keys.verification_keys().get(header.get("kid"))
    if key is None:
        raise InvalidToken("unknown kid")
    try:
        verified = jwt.decode_complete(
            token,
            key.key,
            algorithms=[key.algorithm],  # from our key, never from the token
            audience=audience if audience is not None else settings.TOKEN_AUDIENCE,
            issuer=issuer(),
            leeway=settings.TOKEN_LEEWAY_SECONDS,
            options={"require": REQUIRED_CLAIMS, "verify_signature": True},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"{exc.__class__.__name__}: {exc}")
    # The same checks on the header as PyJWT read and verified it: our quick reading above
    # only picked the key, and must not be what lets a header through.
    _check_header(verified["header"])
    if verified["header"].get("kid") != header.get("kid"):
        raise InvalidToken("bad header: kid")
    return verified["payload"]


def _unverified_header(token: str) -> dict:
    """The JOSE header, read only to choose the verification key.

    jwt.get_unverified_header() decodes and checks all three segments, character by
    character in Python (about 1,200 characters for our tokens), and jwt.decode() does
    it all again: together about 4 % of the web's CPU per chat turn. The header alone is
    60-odd characters; PyJWT still checks the whole token once, in decode_complete()."""
    segment = token.split(".", 1)[0]
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error) as exc:
        raise InvalidToken(f"bad header: {exc.__class__.__name__}")
    if not isinstance(header, dict):
        raise InvalidToken("bad header: not an object")
    if not isinstance(header.get("kid", ""), str):
        raise InvalidToken("bad header: kid")  # as PyJWT's own header check says
    return header


def _check_header(header: dict) -> None:
    if any(name in header for name in FORBIDDEN_HEADERS):
        raise InvalidToken("key-location header present")
    typ = str(header.get("typ", "")).lower()
    if typ not in (ACCESS_TOKEN_TYP, f"application/{ACCESS_TOKEN_TYP}"):
        raise InvalidToken(f"typ {header.get('typ')!r} is not an access token")


def _actors_still_allowed(actors: tuple[str, ...]) -> bool:
    """Every agent in the act chain is active and still allowed in the current tenant,
    so switching an agent off takes effect at once, not when its tokens expire."""
    from tenants.identity.models import AgentGrant, AgentIdentity

    client_ids = set()
    for actor in actors:
        kind, _, client_id = actor.partition(":")
        if kind != "agent" or not client_id:
            return False
        client_ids.add(client_id)
    agents = AgentIdentity.objects.filter(client_id__in=client_ids, disabled_at__isnull=True)
    agent_ids = set(agents.values_list("pk", flat=True))
    if len(agent_ids) != len(client_ids):
        return False
    return AgentGrant.objects.filter(agent_id__in=agent_ids).count() == len(agent_ids)


def _actors(claims: dict) -> tuple[str, ...]:
    chain = []
    act = claims.get("act")
    while isinstance(act, dict) and len(chain) < 10:
        chain.append(str(act.get("sub", "")))
        act = act.get("act")
    return tuple(chain)


_live_reader = None


def _tenant_and_membership(tenant_id: int, user_id: int | None) -> tuple[Tenant | None, Membership | None]:
    """The tenant with its tier, and the user's membership in it with the user: what every
    request with a user's token reads, so one hand-written statement (portal.db.sql)
    instead of two ORM queries. The user's own membership is readable under
    user_context (row-level security's self-read); the tenant_id condition is written
    here, as the tenant's manager would."""
    global _live_reader
    from portal.db import sql
    from tenants.context import user_context
    from tenants.models import Tier

    if not -(2**63) <= tenant_id < 2**63 or (user_id is not None and not 0 <= user_id < 2**63):
        return None, None
    if _live_reader is None:
        _live_reader = sql.RowReader([(Tenant, "t"), (Tier, "tr"), (Membership, "m"), (User, "u")])
    with user_context(user_id):
        row = sql.one(
            f"SELECT {_live_reader.columns} FROM tenants_tenant t JOIN tenants_tier tr ON tr.id = t.tier_id "  # noqa: S608
            "LEFT JOIN tenants_membership m ON m.tenant_id = t.id AND m.user_id = %s "
            "LEFT JOIN tenants_user u ON u.id = m.user_id WHERE t.id = %s",
            [user_id, tenant_id],
        )
    if row is None:
        return None, None
    tenant, tier, membership, user = _live_reader.read(row)
    tenant.tier = tier
    if membership is not None:
        membership.user = user
    return tenant, membership


def validate(token: str, *, audience: str | list[str] | None = None) -> AccessToken:
    """The one validation function: signature, claims, and the live state of tenant and subject."""
    claims = decode(token, audience=audience)
    tenant_id = claims.get("tenant_id")
    if not isinstance(tenant_id, str) or not tenant_id.isascii() or not tenant_id.isdigit():
        raise InvalidToken("bad tenant_id")
    token_scopes = scope_lib.parse(claims.get("scope"))
    subject = str(claims["sub"])
    kind, _, ident = subject.partition(":")
    user_id = int(ident) if kind == "user" and ident.isascii() and ident.isdigit() else None
    tenant, membership = _tenant_and_membership(int(tenant_id), user_id)
    if tenant is None:
        raise InvalidToken("unknown tenant")
    with tenant_context(tenant):
        if user_id is not None:
            if membership is None or not membership.user.is_active:
                raise InvalidToken("no longer a member")
            if not tenant.is_active:
                raise TenantSuspended(tenant)
            # Scopes never exceed what the role allows today (a demotion takes effect at once).
            scopes = token_scopes & scope_lib.scopes_for_role(membership.role)
            actors = _actors(claims)
            if actors and not _actors_still_allowed(actors):
                raise InvalidToken("acting agent disabled or no longer allowed in this tenant")
            return AccessToken(
                claims=claims,
                tenant=tenant,
                scopes=scopes,
                user=membership.user,
                membership=membership,
                actors=_actors(claims),
            )
        if kind == "client":
            from tenants.identity.models import ApiClient, with_owner_role

            client = with_owner_role(ApiClient.objects.filter(client_id=ident, revoked_at__isnull=True)).first()
            if client is None:
                raise InvalidToken("client revoked or unknown")
            if not tenant.is_active:
                raise TenantSuspended(tenant)
            # The client acts on its owner's rights: gone or lowered, its tokens stop at once.
            if client.is_paused:
                raise InvalidToken("client paused: its owner no longer has the rights to it")
            # Issued under credentials it no longer has (a take-over replaced the secret,
            # which whoever left may hold): dead at once, exchanged tokens too. Tokens from
            # before generations existed carry none, the generation every client started in.
            if _credentials_generation(claims) != client.credentials_generation:
                raise InvalidToken("client token issued before its credentials changed")
            if not entitlements.has_feature(tenant, "api_access"):
                raise InvalidToken("the tenant's tier no longer includes API access")
            # As for a person's token: an agent switched off or disallowed stops at once.
            actors = _actors(claims)
            if actors and not _actors_still_allowed(actors):
                raise InvalidToken("acting agent disabled or no longer allowed in this tenant")
            return AccessToken(
                claims=claims,
                tenant=tenant,
                scopes=token_scopes & frozenset(client.scopes),
                client=client,
                actors=actors,
            )
    # Whatever the subject, a suspended tenant's token never passes (fail closed).
    raise InvalidToken("tenant suspended" if not tenant.is_active else "unknown subject kind")


def _credentials_generation(claims: dict) -> int | None:
    generation = claims.get(CREDENTIALS_GENERATION, 0)
    # bool is an int to Python; a token saying `true` says nothing we issued.
    return generation if type(generation) is int else None


def exchanged_claims(subject: AccessToken, agent, *, audience: str, scopes, lifetime: int) -> dict:
    """Claims of an act-on-behalf token: the subject and tenant stay, aud and scope
    narrow, and `act` names the agent, wrapping any earlier actor (RFC 8693 §4.1)."""
    claims = _base_claims(
        sub=subject.claims["sub"],
        tenant=subject.tenant,
        aud=audience,
        scopes=scopes,
        lifetime=lifetime,
        client_id=agent.client_id,
    )
    claims["roles"] = list(subject.claims.get("roles", []))
    for request_claim in ("session_id", "invocation_id"):
        if subject.claims.get(request_claim):
            claims[request_claim] = subject.claims[request_claim]
    if CREDENTIALS_GENERATION in subject.claims:
        # Acting for an API client: the token dies with the credentials the subject's did.
        claims[CREDENTIALS_GENERATION] = subject.claims[CREDENTIALS_GENERATION]
    claims["agent_id"] = agent.client_id
    act = {"sub": agent.subject}
    if isinstance(subject.claims.get("act"), dict):
        act["act"] = subject.claims["act"]
    claims["act"] = act
    return claims

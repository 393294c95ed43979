"""The token endpoint's grants: client_credentials and RFC 8693 token exchange.

Errors are `OAuthError`s carrying the RFC 6749 error code; the view turns them
into `{"error", "error_description"}` JSON. Descriptions are deliberately plain
and never say which check of a token failed (that goes to the log).
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from datetime import timedelta

import jwt
from django.conf import settings
from django.utils import timezone

from tenants import entitlements
from tenants.context import tenant_context
from tenants.identity import keys, tokens
from tenants.identity import scopes as scope_lib
from tenants.identity.models import AgentGrant, AgentIdentity, ApiClient, hash_secret, with_owner_role
from tenants.models import Tenant

log = logging.getLogger(__name__)

GRANT_CLIENT_CREDENTIALS = "client_credentials"
GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
TOKEN_TYPE_ACCESS = "urn:ietf:params:oauth:token-type:access_token"
TOKEN_TYPE_JWT = "urn:ietf:params:oauth:token-type:jwt"
ACCEPTED_SUBJECT_TYPES = (TOKEN_TYPE_ACCESS, TOKEN_TYPE_JWT)

API_CLIENT_PREFIX = "tpc"
AGENT_CLIENT_PREFIX = "agt"


# Said only to a caller that proved the secret: the client itself, which needs to know why.
PAUSED_CLIENT = (
    "This API client is paused: the person who owns it no longer has the rights to it. "
    "An admin of the tenant can take it over on the API clients page."
)


class OAuthError(Exception):
    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def _secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret or ""), stored_hash)


@dataclass(frozen=True)
class AuthenticatedClient:
    api_client: ApiClient | None = None
    agent: AgentIdentity | None = None


def api_client_id(tenant: Tenant, suffix: str) -> str:
    # The tenant is part of the id, so authentication finds the client inside
    # that tenant's context (row-level security) without a cross-tenant scan.
    return f"{API_CLIENT_PREFIX}_{tenant.pk}_{suffix}"


def authenticate_client(client_id: str, client_secret: str) -> AuthenticatedClient:
    """client_secret_basic / client_secret_post for API clients and agent identities."""
    invalid = OAuthError("invalid_client", "Client authentication failed.", status=401)
    if not client_id or not client_secret or len(client_id) > 64 or len(client_secret) > 256:
        raise invalid
    # Ids are ASCII letters, digits and "_" (api_client_id, _new_agent_client_id); anything
    # else, a NUL byte say, would only reach the database to fail there (PostgreSQL: a 500).
    if not (client_id.isascii() and client_id.replace("_", "").isalnum()):
        raise invalid
    if client_id.startswith(AGENT_CLIENT_PREFIX + "_"):
        agent = AgentIdentity.objects.filter(client_id=client_id, disabled_at__isnull=True).first()
        if agent is None or not _secret_matches(client_secret, agent.secret_hash):
            raise invalid
        return AuthenticatedClient(agent=agent)
    prefix, _, rest = client_id.partition("_")
    tenant_part, _, _ = rest.partition("_")
    if prefix != API_CLIENT_PREFIX or not (tenant_part.isascii() and tenant_part.isdigit()):
        raise invalid
    tenant = Tenant.objects.select_related("tier").filter(pk=int(tenant_part)).first()
    if tenant is None:
        raise invalid
    with tenant_context(tenant):
        client = with_owner_role(ApiClient.objects.filter(client_id=client_id, revoked_at__isnull=True)).first()
    if client is None or not _secret_matches(client_secret, client.secret_hash):
        raise invalid
    if not tenant.is_active:
        raise OAuthError("unauthorized_client", "The client's tenant is suspended.")
    if client.is_paused:
        raise OAuthError("invalid_client", PAUSED_CLIENT, status=401)
    client.tenant = tenant
    return AuthenticatedClient(api_client=client)


def _requested_scopes(scope: str | None, allowed: frozenset[str]) -> frozenset[str]:
    if scope is None or scope.strip() == "":
        return allowed
    requested = scope_lib.parse(scope)
    if scope_lib.unknown(requested) or not requested <= allowed:
        raise OAuthError("invalid_scope", "The requested scope is invalid or exceeds what is granted.")
    return requested


def token_response(access_token: str, scopes, lifetime: int, issued_type: str | None = None) -> dict:
    body = {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": lifetime,
        "scope": scope_lib.format_scope(scopes),
    }
    if issued_type:
        body["issued_token_type"] = issued_type
    return body


def client_credentials(client: AuthenticatedClient, scope: str | None) -> dict:
    if client.api_client is not None:
        api_client = client.api_client
        if not entitlements.has_feature(api_client.tenant, "api_access"):
            raise OAuthError("unauthorized_client", "API access is not included in the tenant's tier.")
        # Only what a client can use, whatever its row says (a client from before the limit,
        # should one have escaped migration identity 0006): the rest needs a person.
        granted = _requested_scopes(scope, frozenset(api_client.scopes) & scope_lib.CLIENT_SCOPES)
        with tenant_context(api_client.tenant):
            ApiClient.objects.filter(pk=api_client.pk).update(last_used_at=timezone.now())
        token = tokens.issue_client_token(api_client, granted)
        return token_response(token, granted, settings.TOKEN_LIFETIME_SECONDS)
    agent = client.agent
    # An agent's own token proves who the agent is; it is good only as an
    # actor_token at this endpoint, never as an API credential.
    token = issue_actor_token(agent)
    return token_response(token, frozenset(), settings.EXCHANGED_TOKEN_LIFETIME_SECONDS)


def actor_audience() -> str:
    return f"{settings.TOKEN_ISSUER}/oauth/token"


def issue_actor_token(agent: AgentIdentity) -> str:
    now = timezone.now()
    claims = {
        "iss": settings.TOKEN_ISSUER,
        "sub": agent.subject,
        "aud": actor_audience(),
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + timedelta(seconds=settings.EXCHANGED_TOKEN_LIFETIME_SECONDS)).timestamp()),
        "jti": _jti(),
        "client_id": agent.client_id,
        "agent_id": agent.client_id,
    }
    return tokens.sign(claims)


def _jti() -> str:
    import uuid

    return uuid.uuid4().hex


def validate_actor_token(token: str) -> AgentIdentity:
    """An agent's actor token: ours, for this endpoint, naming an active agent identity."""
    try:
        header = jwt.get_unverified_header(token)
        if any(name in header for name in tokens.FORBIDDEN_HEADERS):
            raise tokens.InvalidToken("key-location header present")
        if str(header.get("typ", "")).lower() != tokens.ACCESS_TOKEN_TYP:
            raise tokens.InvalidToken("typ")
        key = keys.verification_keys().get(header.get("kid"))
        if key is None:
            raise tokens.InvalidToken("unknown kid")
        claims = jwt.decode(
            token,
            key.key,
            algorithms=[key.algorithm],
            audience=actor_audience(),
            issuer=settings.TOKEN_ISSUER,
            leeway=settings.TOKEN_LEEWAY_SECONDS,
            options={"require": ["iss", "sub", "aud", "exp", "iat", "nbf", "jti"]},
        )
    except (jwt.PyJWTError, tokens.InvalidToken) as exc:
        log.info("actor token refused: %s", exc)
        raise OAuthError("invalid_grant", "The actor token is not valid.")
    kind, _, client_id = str(claims["sub"]).partition(":")
    agent = AgentIdentity.objects.filter(client_id=client_id, disabled_at__isnull=True).first()
    if kind != "agent" or agent is None:
        raise OAuthError("invalid_grant", "The actor token is not valid.")
    return agent


def _target_audience(subject: tokens.AccessToken, audiences: list[str], resources: list[str]) -> str:
    """The one audience the exchanged token is for: one this server issues for, and one
    the subject token could already reach (an exchange only narrows, RFC 8693 §2.2.2)."""
    targets = [*audiences, *resources]
    if len(set(targets)) > 1 or (targets and targets[0] not in settings.TOKEN_AUDIENCES):
        raise OAuthError("invalid_target", "The requested audience or resource is not one this server issues for.")
    target = targets[0] if targets else settings.EXCHANGE_DEFAULT_AUDIENCE
    if target not in _audiences_within_reach(subject):
        raise OAuthError(
            "invalid_target", "An exchange can only narrow: the subject token was not issued for this audience."
        )
    return target


def _audiences_within_reach(subject: tokens.AccessToken) -> frozenset[str]:
    """Where a token exchanged from `subject` may go without widening it.

    A person's own token for the portal API (first hop: no `act`) is the widest
    there is: any audience we issue for narrows it. Every other token keeps the
    audiences it has, so a turn token for the runtime never becomes one for the
    portal API.
    """
    aud = subject.claims.get("aud")
    had = frozenset([aud] if isinstance(aud, str) else aud or [])
    if subject.user is not None and not subject.actors and settings.TOKEN_AUDIENCE in had:
        return frozenset(settings.TOKEN_AUDIENCES)
    return had


def token_exchange(
    *,
    client: AuthenticatedClient | None,
    subject_token: str,
    subject_token_type: str,
    actor_token: str | None,
    actor_token_type: str | None,
    audiences: list[str],
    resources: list[str],
    scope: str | None,
    requested_token_type: str | None,
) -> dict:
    if not subject_token or not subject_token_type:
        raise OAuthError("invalid_request", "subject_token and subject_token_type are required.")
    if subject_token_type not in ACCEPTED_SUBJECT_TYPES:
        raise OAuthError("invalid_request", "Unsupported subject_token_type.")
    if requested_token_type not in (None, "", TOKEN_TYPE_ACCESS, TOKEN_TYPE_JWT):
        raise OAuthError("invalid_request", "Only access tokens can be issued.")
    if client is not None and client.api_client is not None:
        raise OAuthError("unauthorized_client", "API clients may not exchange tokens.")

    try:
        subject = tokens.validate(subject_token, audience=list(settings.TOKEN_AUDIENCES))
    except tokens.InvalidToken as exc:
        log.info("token exchange: subject token refused: %s", exc.reason)
        raise OAuthError("invalid_grant", "The subject token is not valid.")

    if actor_token:
        if actor_token_type not in ACCEPTED_SUBJECT_TYPES:
            raise OAuthError("invalid_request", "actor_token_type is missing or unsupported.")
        agent = validate_actor_token(actor_token)
        if client is not None and client.agent is not None and client.agent.pk != agent.pk:
            raise OAuthError("invalid_grant", "The actor token names another agent than the client.")
    elif client is not None and client.agent is not None:
        agent = client.agent
    else:
        raise OAuthError("invalid_request", "Acting on behalf needs an actor: actor_token or agent client credentials.")

    audience = _target_audience(subject, audiences, resources)
    token, granted, lifetime = act_on_behalf(subject, agent, scope=scope, audience=audience)
    return token_response(token, granted, lifetime, issued_type=TOKEN_TYPE_ACCESS)


def act_on_behalf(
    subject: tokens.AccessToken,
    agent: AgentIdentity,
    *,
    scope: str | None,
    audience: str,
    allowed: bool | None = None,
):
    """The exchange's policy, once the subject is known: may this agent act for the
    subject's users (active, AgentGrant, owner tenant), with which scopes (never wider than
    the subject's or the agent's own), for how long (never past the subject token).
    Returns (signed token, granted scopes, lifetime). The worker calls it directly
    with the subject it just built (tokens.member_subject), so a chat turn signs one
    token instead of signing a subject token and verifying it again; it also passes
    `allowed`, whether an AgentGrant exists, read live in the same statement as the
    member's role (None: read it here)."""
    tenant = subject.tenant
    if allowed is None:
        with tenant_context(tenant):
            allowed = AgentGrant.objects.filter(agent=agent).exists()
    # Switched off by an operator: it acts for nobody. The token endpoint finds only active
    # agents, but the worker hands its turn's agent here itself (mint_act_on_behalf_token).
    if not agent.is_active or not allowed or (agent.owner_tenant_id is not None and agent.owner_tenant_id != tenant.pk):
        raise OAuthError("unauthorized_client", "This agent may not act for users of this tenant.")

    ceiling = subject.scopes
    if agent.allowed_scopes:
        ceiling = ceiling & frozenset(agent.allowed_scopes)
    if scope is None or not scope.strip():
        granted = ceiling
    else:
        requested = scope_lib.parse(scope)
        if scope_lib.unknown(requested) or not requested <= subject.scopes:
            raise OAuthError("invalid_scope", "The requested scope exceeds the subject token's.")
        if not requested <= ceiling:
            raise OAuthError("invalid_scope", "The requested scope exceeds what this agent may use.")
        granted = requested

    now = int(timezone.now().timestamp())
    lifetime = max(1, min(settings.EXCHANGED_TOKEN_LIFETIME_SECONDS, int(subject.claims["exp"]) - now))
    claims = tokens.exchanged_claims(subject, agent, audience=audience, scopes=granted, lifetime=lifetime)
    return tokens.sign(claims), granted, lifetime

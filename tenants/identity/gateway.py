"""The one prologue of every gateway an agent runtime calls (knowledge, tools, memory).

A runtime reaches the portal with the turn's act-on-behalf token (aud
agent-runtime) as its only credential. Before any gateway does its work the same
things must hold, in the same order, for all of them:

1. the token is valid for the runtime's audience (else 401);
2. it carries the gateway's scope (else 403);
3. it is an act-on-behalf token: an agent (``act``) acting for a user (``sub``),
   and a member of the tenant when the gateway needs one (else 403);
4. a ``tenant_id`` the runtime names is the token's tenant (else 403): a token of
   another tenant, or a confused runtime, gets nothing;
5. the gateway's own checks (plan, input), still outside the tenant context;
6. in the token tenant's context, the acting agent is the agent whose workload
   identity the token's actor names (and the slug, when the runtime gives one).

`agent_call` does all of that and hands the gateway an `AgentCall`; every refusal
is one `GatewayRefused(status, detail)` that the HTTP views turn into problem JSON
and the in-process gateways into the runtime's own error. The helpers for the
views (`bearer`, `refused_response`) live here too, so that the three gateway
endpoints parse the credential and answer refusals the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from rest_framework.permissions import AllowAny
from rest_framework.views import APIView

from portal.drf import JSONParser
from tenants.context import tenant_context

log = logging.getLogger(__name__)

BEARER_REQUIRED = "A bearer token (the agent's act-on-behalf token) is required."
WWW_AUTHENTICATE = 'Bearer realm="api", error="invalid_token"'


# A gateway's 503 (a store or a knowledge base throttled or out of reach) says when asking
# again may help, so a runtime backs off instead of hammering a struggling backend.
RETRY_AFTER_S = 30


class GatewayRefused(Exception):
    """A gateway call refused: `status` is the HTTP status, `detail` a reason the caller may read,
    `retry_after` the seconds after which trying again may help (every 503 has one)."""

    def __init__(self, status: int, detail: str, *, retry_after: int | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.retry_after = retry_after if retry_after is not None else (RETRY_AFTER_S if status == 503 else None)


@dataclass(frozen=True)
class AgentCall:
    """Who calls: the token tenant, the member the agent acts for, the acting agent."""

    token: Any  # tenants.identity.tokens.AccessToken
    tenant: Any
    user: Any
    agent: Any
    roles: tuple[str, ...]
    claims: dict

    @property
    def membership(self):
        return self.token.membership


def authorize(raw_token: str, scope: str, *, tenant_id=None, member_required: bool = False, name: str = "gateway"):
    """Steps 1–4 of the module docstring: the validated act-on-behalf token, or GatewayRefused."""
    from tenants.identity import tokens

    try:
        token = tokens.validate(raw_token, audience=settings.EXCHANGE_DEFAULT_AUDIENCE)
    except tokens.InvalidToken as exc:
        log.info("%s: token refused: %s", name, exc.reason)
        raise GatewayRefused(401, "The access token is invalid or expired.")
    if scope not in token.scopes:
        raise GatewayRefused(403, f"The access token lacks the scope {scope}.")
    if not token.actors or token.user is None or (member_required and token.membership is None):
        raise GatewayRefused(403, "An act-on-behalf token (an agent acting for a member) is required.")
    if tenant_id is not None and str(tenant_id) != str(token.tenant.pk):
        raise GatewayRefused(403, "The token was not issued for this tenant.")
    return token


def acting_agent(token, agent_slug: str = ""):
    """The agent the token's actor names (by its workload identity), in the current tenant context."""
    from agents.models import Agent

    client_id = token.actor.partition(":")[2]
    agents = Agent.objects.filter(identity__client_id=client_id)
    if agent_slug:
        agents = agents.filter(slug=agent_slug)
    agent = agents.first()
    if agent is None:
        raise GatewayRefused(403, "The acting agent is not an agent of this tenant.")
    return agent


@contextmanager
def agent_call(
    raw_token: str,
    scope: str,
    agent_slug: str = "",
    *,
    tenant_id=None,
    member_required: bool = False,
    precheck: Callable[[Any], None] | None = None,
    name: str = "gateway",
) -> Iterator[AgentCall]:
    """Validate the call (module docstring, steps 1–6) and run the body in the token tenant's context.

    `precheck(tenant)` is the gateway's own refusals that need no tenant context (its
    plan feature, its input); it runs after the token checks so that a caller without a
    valid token learns nothing of the input rules."""
    token = authorize(raw_token, scope, tenant_id=tenant_id, member_required=member_required, name=name)
    if precheck is not None:
        precheck(token.tenant)
    with acting(token, agent_slug) as call:
        yield call


@contextmanager
def acting(token, agent_slug: str = "") -> Iterator[AgentCall]:
    """In the context of an `authorize`d token's tenant: the call of its acting agent (step 6)."""
    with tenant_context(token.tenant, user_id=token.user.pk):
        agent = acting_agent(token, agent_slug)
        # The role the user holds now (tokens.validate has just read the membership), not the
        # token's `roles` claim: a demotion during a turn takes effect at the next call, as it
        # does for the token's scopes, rather than when the exchanged token expires.
        roles = (token.membership.role,) if token.membership is not None else ()
        yield AgentCall(
            token=token,
            tenant=token.tenant,
            user=token.user,
            agent=agent,
            roles=roles,
            claims=token.claims,
        )


# --- the HTTP side (the gateway views) ----------------------------------------------------------


def bearer(request) -> str:
    """The raw bearer token of `request`, or GatewayRefused(401)."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise GatewayRefused(401, BEARER_REQUIRED)
    return token.strip()


def refused_response(exc: GatewayRefused):
    """A refusal as problem JSON; a 401 says how to authenticate (RFC 6750)."""
    from rest_framework.response import Response

    from portal.api import PROBLEM_CONTENT_TYPE, problem

    response = Response(problem(exc.status, None, exc.detail), status=exc.status, content_type=PROBLEM_CONTENT_TYPE)
    if exc.status == 401:
        response["WWW-Authenticate"] = WWW_AUTHENTICATE
    if exc.retry_after:
        response["Retry-After"] = str(exc.retry_after)
    return response


class GatewayView(APIView):
    """Base of the gateway endpoints: the bearer token is the only credential (validated by
    `agent_call` in the service, the same function the in-process gateways call), JSON in,
    and every GatewayRefused answered as problem JSON."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    parser_classes = [JSONParser]

    def handle_exception(self, exc):
        if isinstance(exc, GatewayRefused):
            return refused_response(exc)
        return super().handle_exception(exc)

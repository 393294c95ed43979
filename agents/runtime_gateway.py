"""The portal side of calling an agent runtime for one invocation.

Resolves the runtime from the tenant's resource bindings and settings, mints
the act-on-behalf token (RFC 8693 exchange: the user is the subject, the
agent's workload identity the actor — never the user's own token), builds the
tenant context headers and the request, and yields the runtime's events.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from django.conf import settings

from agents.models import Invocation, MessageStatus, ModelOffering
from portal.text import without_nul
from tenants import entitlements
from tenants.context import require_tenant
from tenants.models import Tenant, region_validator

log = logging.getLogger(__name__)

HISTORY_MESSAGES = 20
EXCHANGED_SCOPES = "agents:invoke kb:read"
TOOLS_SCOPE = "tools:invoke"  # added to the exchanged token only when the turn offers tools


class TransientRuntimeError(Exception):
    """Connection failure, timeout, 5xx or 429: worth a retry."""


class RuntimeRejected(Exception):
    """The runtime refused or failed the turn for good (4xx, error event)."""


@dataclass(frozen=True)
class TurnFacts:
    """What the runtime call needs beyond the claimed invocation, read live in one statement:
    the member's role (None: no longer an active member), whether the tenant still allows
    the agent's identity (AgentGrant), and the conversation's answered messages before
    this turn's question, oldest first."""

    role: str | None
    agent_allowed: bool
    history: list[dict]


# One statement instead of three ORM queries (membership, grant, history), which cost the
# ORM 0.3–0.5 ms of Python each: the row of facts LEFT JOINed to the (possibly empty)
# history, newest first. SQLite and PostgreSQL both accept it; each table is filtered by
# tenant_id as TenantManager would, and on PostgreSQL row-level security applies as to any
# statement (portal.db.sql prepares it once per connection).
_FACTS_SQL = """
SELECT f.role, f.allowed, h.role, h.content
FROM (
    SELECT
        (SELECT m.role FROM tenants_membership m JOIN tenants_user u ON u.id = m.user_id
            WHERE m.tenant_id = %s AND m.user_id = %s AND u.is_active) AS role,
        EXISTS (SELECT 1 FROM identity_agentgrant g WHERE g.tenant_id = %s AND g.agent_id = %s) AS allowed
) f
LEFT JOIN (
    SELECT role, content, created_at, id FROM agents_message
    WHERE tenant_id = %s AND conversation_id = %s AND status = %s AND created_at < %s
    ORDER BY created_at DESC, id DESC
    LIMIT %s
) h ON 1 = 1
ORDER BY h.created_at DESC, h.id DESC
"""


def turn_facts(tenant: Tenant, invocation: Invocation) -> TurnFacts:
    from portal.db import sql

    t = tenant.pk
    rows = sql.all_rows(
        _FACTS_SQL,
        [
            t,
            invocation.user_id,
            t,
            invocation.agent.identity_id,
            t,
            invocation.conversation_id,
            str(MessageStatus.DONE),
            sql.dt(invocation.user_message.created_at),
            HISTORY_MESSAGES,
        ],
    )
    role, allowed = rows[0][:2]
    history = [{"role": r, "content": c} for *_, r, c in reversed(rows) if r is not None]
    return TurnFacts(role=role, agent_allowed=bool(allowed), history=history)


def exchanged_scope(tenant: Tenant, identity) -> str:
    """The scope a turn's token asks for: EXCHANGED_SCOPES, plus memory:read and memory:write
    when the tenant's plan has memory and the agent's identity may use them (asking for
    more than the identity allows would fail the exchange, so the turn)."""
    from agents.memory.services import FEATURE
    from tenants import entitlements
    from tenants.identity.scopes import MEMORY_SCOPES

    scope = EXCHANGED_SCOPES
    allowed = set(identity.allowed_scopes or MEMORY_SCOPES)
    if entitlements.has_feature(tenant, FEATURE) and allowed >= MEMORY_SCOPES:
        scope = " ".join([scope, *sorted(MEMORY_SCOPES)])
    return scope


def mint_act_on_behalf_token(
    tenant: Tenant, invocation: Invocation, facts: TurnFacts | None = None, *, tools: bool = False
) -> str:
    """The one place a turn's token is minted: the user's token exchanged for a
    short-lived one with aud=agent-runtime, narrowed scope and act={agent}; with
    `tools` (the turn offers tools) the scope includes tools:invoke."""
    from tenants.identity import oauth, tokens

    identity = invocation.agent.identity
    if identity is None:
        raise RuntimeRejected("This agent has no workload identity; an operator must issue one.")
    facts = facts if facts is not None else turn_facts(tenant, invocation)
    try:
        if facts.role is None:
            raise tokens.InvalidToken("not a member")
        # The exchange's own policy (oauth.act_on_behalf) on the subject the worker builds
        # itself: signing a user token only to verify it again would prove nothing more.
        subject = tokens.member_subject(
            tenant,
            invocation.user_id,
            facts.role,
            session_id=invocation.conversation.runtime_session_id,
            # What the portal's gateways record during the turn belongs to it (turn_in_progress).
            invocation_id=str(invocation.pk),
            lifetime=settings.EXCHANGED_TOKEN_LIFETIME_SECONDS,
        )
        token, _, _ = oauth.act_on_behalf(
            subject,
            identity,
            scope=f"{exchanged_scope(tenant, identity)} {TOOLS_SCOPE}" if tools else exchanged_scope(tenant, identity),
            audience=settings.EXCHANGE_DEFAULT_AUDIENCE,
            allowed=facts.agent_allowed,
        )
    except oauth.OAuthError as exc:
        raise RuntimeRejected(f"The agent may not act for you here ({exc.error}).")
    except tokens.InvalidToken as exc:
        raise RuntimeRejected(f"Your access could not be confirmed ({exc.reason}).")
    return token


def turn_in_progress(token) -> Invocation | None:
    """The turn a runtime's act-on-behalf token was minted for, while it runs: what the
    portal's gateways record when the runtime calls them (a flagged passage) belongs to it.

    The turn is named by the token's `invocation_id` (mint_act_on_behalf_token), and taken
    only if it is one of the token's tenant's (the tenant context: scoped manager and row-
    level security), asked by the token's user, in the conversation of the token's
    `session_id`, run by the acting agent, and running now. Anything else (a turn that has
    ended, a token exchanged outside a turn, a claim that is not ours) is no turn: None.
    Needs the token's tenant in the context."""
    claimed, session = token.claims.get("invocation_id"), token.claims.get("session_id")
    if not isinstance(claimed, str) or not isinstance(session, str) or token.user is None or not token.actors:
        return None
    try:
        invocation_id = uuid.UUID(claimed)
    except ValueError:
        return None
    kind, _, agent_client_id = token.actor.partition(":")
    if kind != "agent":
        return None
    return Invocation.objects.filter(
        pk=invocation_id,
        user_id=token.user.pk,
        conversation__runtime_session_id=session,
        agent__identity__client_id=agent_client_id,
        status__in=[MessageStatus.RUNNING, MessageStatus.STREAMING],
    ).first()


def tenant_context_headers(tenant: Tenant, *, session_id: str, user_id) -> dict[str, str]:
    """The tenant context a turn's calls carry (to the runtime, and to a tenant's AgentCore
    Gateway): tenant, tier, region, deployment model, entitlements, flags, session, user."""
    prefix = "X-Amzn-Bedrock-AgentCore-Runtime-Custom-"
    if not region_validator.regex.search(tenant.region or ""):
        # Forms and services refuse such a region; a row written around them (or before the
        # check) must still not put a line break or a space into the runtime's headers.
        raise RuntimeRejected("This organisation's AWS region is not valid: an operator must correct it.")
    features = sorted(entitlements.effective_entitlements(tenant))
    return {
        f"{prefix}Tenant-Id": str(tenant.pk),
        f"{prefix}Tier": tenant.tier.slug,
        f"{prefix}Region": tenant.region,
        f"{prefix}Deployment-Model": tenant.deployment_model,
        f"{prefix}Entitlements": ",".join(features),
        f"{prefix}Feature-Flags": ",".join(f for f in features if f in settings.RUNTIME_FEATURE_FLAGS),
        "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": session_id,
        "X-Amzn-Bedrock-AgentCore-Runtime-User-Id": f"user-{user_id}",
    }


def tenant_headers(tenant: Tenant, token: str, invocation: Invocation) -> dict[str, str]:
    return {
        **tenant_context_headers(
            tenant, session_id=invocation.conversation.runtime_session_id, user_id=invocation.user_id
        ),
        "Authorization": f"Bearer {token}",
    }


def model_offering(invocation: Invocation) -> ModelOffering | None:
    """The invocation's model offering (None if it was removed), read once per turn:
    the request names its model and the usage event prices the same one."""
    if not hasattr(invocation, "_model_offering"):
        from agents.services import visible_offerings

        # Usually still in the catalogue snapshot; a model switched off since the turn was
        # queued is read from the database, so the turn is still priced from its row.
        offering = visible_offerings(require_tenant()).get(invocation.model_key)
        if offering is None:
            offering = ModelOffering.objects.filter(key=invocation.model_key).first()
        invocation._model_offering = offering
    return invocation._model_offering


def tool_specs(tenant: Tenant, invocation: Invocation) -> list[dict]:
    """The tools this turn offers the model: those the tenant enabled for the agent that its
    tier allows and that are available, when the agent's identity may use tools:invoke (an
    identity narrowed without it could not be given a token to run them)."""
    from agents.tools import services as tool_services

    if tool_services.why_agent_cannot_call_tools(invocation.agent) is not None:
        return []  # the same rule the Tools page states and set_agent_tools enforces
    if not tool_services.entitled(tenant):
        return []  # decided from the tier in hand: a plan without tools costs the turn no query
    return tool_services.tool_specs(tenant, invocation.agent)


def served_tool_specs(tenant: Tenant, invocation: Invocation, tools: list[dict], token: str) -> list[dict]:
    """`tools` (the turn's enabled tools) as the server of the tenant's tools describes them:
    unchanged for the portal's own handlers; for a tenant whose AgentCore Gateway serves its
    tools, the gateway's own descriptions of those it lists, and none it does not (fail
    closed: a gateway that cannot be asked offers nothing, and the turn answers without)."""
    from agents.tools import services as tool_services

    if not tools or not tool_services.served_by_gateway(tenant):
        return tools
    try:
        # Through the gateway's own prologue, as when the runtime lists tools: the token
        # names the tenant, user, session and agent the gateway's request carries.
        return tool_services.gateway_tool_specs(
            token, [tool["name"] for tool in tools], agent_slug=invocation.agent.slug
        )
    except tool_services.GatewayRefused as exc:
        log.warning("invocation %s: answering without tools: %s", invocation.pk, exc.detail)
        return []


def skills_for_turn(tenant: Tenant, invocation: Invocation) -> list[dict]:
    """The skills this turn's agent follows in the tenant (bridged ones composed): a cache
    get in the steady state, and no query at all for an agent without skills once cached."""
    from agents.skills import services as skill_services

    # agents.turns may have read the skills cache with the turn's status (one Redis round trip).
    return skill_services.skills_for_turn(tenant, invocation.agent, getattr(invocation, "_skills_cached", None))


def build_request(
    invocation: Invocation,
    facts: TurnFacts | None = None,
    tools: list[dict] | None = None,
    skills: list[dict] | None = None,
) -> dict:
    if facts is None:
        facts = turn_facts(require_tenant(), invocation)
    offering = model_offering(invocation)
    body = {
        "invocation_id": str(invocation.pk),
        "prompt": invocation.user_message.content,
        "messages": facts.history,
        "agent": {
            "id": invocation.agent.slug,
            "name": invocation.agent.name,
            "instructions": invocation.agent.instructions,
        },
        "model": {
            "provider": offering.provider if offering else "offline",
            "model_id": offering.model_id if offering else "offline-small",
            "max_tokens": 1024,
            "temperature": 0.2,
        },
        "context": {"passages": []},
        "stream": True,
    }
    if tools:
        body["tools"] = tools
    if skills:
        body["skills"] = skills
    return body


def runtime_kind(tenant: Tenant) -> str:
    """The configured runtime kind (AGENT_RUNTIME). Which runtime of that kind a tenant
    reaches is client_for's business: a dedicated tenant only ever its own."""
    return settings.AGENT_RUNTIME


DEDICATED_RUNTIME_MISSING = (
    "This organisation's dedicated runtime is not configured, so its turns cannot run. "
    "An operator must bind its {what} (operator console, tenant settings, resource bindings)."
)


_local_client = None
_http_clients: dict[tuple[str, float], object] = {}
_agentcore_clients: dict[tuple, object] = {}
_clients_lock = threading.Lock()


def client_for(kind: str, tenant: Tenant):
    """The runtime client for a tenant: a dedicated tenant's own runtime (its bindings'
    ARN or URL, never the shared one), the platform's AgentCore or HTTP runtime, or the
    in-process reference agent (`local`: one process, where dedication does not apply)."""
    from agents.runtime import clients

    global _local_client
    # A dedicated tenant runs only on its own runtime: without one it fails closed here
    # rather than sending its data to the shared one.
    own = tenant.bindings.dedicated_runtime(kind)
    if own == "":
        log.error("tenant %s is dedicated but has no %s runtime binding", tenant.slug, kind)
        raise RuntimeRejected(
            DEDICATED_RUNTIME_MISSING.format(what="runtime ARN" if kind == "agentcore" else "runtime URL")
        )
    if kind == "agentcore":
        from tenants import aws as tenant_aws

        arn = own or settings.AGENTCORE_RUNTIME_ARN
        if not arn:
            raise RuntimeRejected("No AgentCore runtime is configured for this tenant.")
        # Made once per runtime and process: building a boto3 client costs tens of ms (it
        # loads the service model), and one client serves many threads.
        # A client signs with the credentials it was made with: one made with a tenant's
        # assumed role (tenants.aws) serves that tenant alone.
        key = (arn, settings.AGENTCORE_QUALIFIER, tenant.region, *tenant_aws.client_key(tenant))
        with _clients_lock:
            client = _agentcore_clients.get(key)
            if client is None:
                client = _agentcore_clients[key] = clients.AgentCoreRuntimeClient(
                    arn,
                    qualifier=settings.AGENTCORE_QUALIFIER,
                    region_name=tenant.region,
                    session=tenant_aws.session_for(tenant),
                )
        return client
    if kind == "http":
        # One client per URL and process: it keeps its connections alive between calls.
        url = own or settings.RUNTIME_URL
        key = (url, settings.RUNTIME_TIMEOUT_SECONDS)
        client = _http_clients.get(key)
        if client is None:
            client = _http_clients.setdefault(
                key, clients.HttpRuntimeClient(url, timeout=settings.RUNTIME_TIMEOUT_SECONDS)
            )
        return client
    if _local_client is None:
        from agents.knowledge.gateway import InProcessKnowledgeGateway
        from agents.tools.gateway import InProcessToolGateway
        from tenants.identity import keys

        # Same verification as a remote runtime: our JWKS, our issuer, aud=agent-runtime.
        # Retrieval goes through the same token validation + service as the HTTP gateway.
        _local_client = clients.LocalRuntimeClient.from_jwks(
            keys.jwks,
            issuer=settings.TOKEN_ISSUER,
            audience=settings.EXCHANGE_DEFAULT_AUDIENCE,
            knowledge=InProcessKnowledgeGateway(),
            tools=InProcessToolGateway(),
            memory=in_process_memory_gateway(),
        )
    return _local_client


def in_process_memory_gateway():
    """The local runtime's memory gateway: the same service functions as the HTTP endpoints."""
    from agents.memory.gateway import InProcessMemoryGateway

    return InProcessMemoryGateway()


def invoke(tenant: Tenant, invocation: Invocation) -> Iterator[dict]:
    from agents.runtime import clients
    from agents.runtime.contract import InvocationContext, InvocationRequest

    # One statement before the call (the claim loaded the agent with its identity): outside
    # a transaction, portal.db.postgresql sends it with the tenant settings in one round
    # trip, where an atomic block would add BEGIN and COMMIT.
    facts = getattr(invocation, "_facts", None) or turn_facts(tenant, invocation)  # the claim may have read them
    invocation._facts = facts  # the output guard reads the history the runtime was sent
    tools = tool_specs(tenant, invocation)
    token = mint_act_on_behalf_token(tenant, invocation, facts, tools=bool(tools))
    tools = served_tool_specs(tenant, invocation, tools, token)
    headers = tenant_headers(tenant, token, invocation)
    request = build_request(invocation, facts, tools, skills_for_turn(tenant, invocation))
    kind = runtime_kind(tenant)  # recorded on the invocation when the turn was claimed
    invocation._runtime_called = (time.time(), time.perf_counter())  # for the turn's trace
    try:
        client = client_for(kind, tenant)
        events = client.invoke(InvocationRequest.from_dict(request), InvocationContext.from_headers(headers))
        for event in events:
            # Model output, tool results and document text may carry U+0000, which the
            # turn's finish (answer, citations, tool calls, usage event) could not store.
            data = without_nul(event.to_dict())
            if data.get("type") == "error" and data.get("retryable"):
                raise TransientRuntimeError(data.get("message") or "The runtime asked for a retry.")
            yield data
    except clients.TransientRuntimeError as exc:
        raise TransientRuntimeError(str(exc)) from exc
    except clients.RuntimeClientError as exc:
        # The client's message can name internal hosts; the person gets a plain reason.
        log.warning("invocation %s: runtime refused the turn: %s", invocation.pk, exc)
        raise RuntimeRejected(rejection_reason(exc)) from exc


ROLE_NOT_ASSUMED = (
    "This organisation's AWS role could not be assumed, so its turns cannot run. "
    "An operator must check its IAM role (operator console, tenant settings, resource bindings)."
)


def rejection_reason(exc: Exception) -> str:
    """What the person is told when the runtime client failed the turn for good."""
    from tenants import aws as tenant_aws

    if isinstance(exc.__cause__, tenant_aws.TenantCredentialsError):
        return ROLE_NOT_ASSUMED
    return "The agent runtime could not answer this turn."

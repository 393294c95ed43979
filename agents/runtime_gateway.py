"""The portal side of calling an agent runtime for one invocation.

Resolves the runtime from the tenant's resource bindings and settings, mints
the act-on-behalf token (RFC 8693 exchange: the user is the subject, the
agent's workload identity the actor — never the user's own token), builds the
tenant context headers and the request, and yields the runtime's events.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from django.conf import settings
from django.db import transaction

from agents.models import Invocation, Message, MessageStatus, ModelOffering
from tenants import entitlements
from tenants.context import require_tenant
from tenants.models import Tenant

log = logging.getLogger(__name__)

HISTORY_MESSAGES = 20
EXCHANGED_SCOPES = "agents:invoke kb:read"


class TransientRuntimeError(Exception):
    """Connection failure, timeout, 5xx or 429: worth a retry."""


class RuntimeRejected(Exception):
    """The runtime refused or failed the turn for good (4xx, error event)."""


def mint_act_on_behalf_token(tenant: Tenant, invocation: Invocation) -> str:
    """The one place a turn's token is minted: the user's token exchanged for a
    short-lived one with aud=agent-runtime, narrowed scope and act={agent}."""
    from tenants.identity import oauth, tokens

    identity = invocation.agent.identity
    if identity is None:
        raise RuntimeRejected("This agent has no workload identity; an operator must issue one.")
    try:
        # The exchange's own policy (oauth.act_on_behalf) on the subject the worker builds
        # itself: signing a user token only to verify it again would prove nothing more.
        subject = tokens.user_subject(
            invocation.user,
            tenant,
            session_id=invocation.conversation.runtime_session_id,
            lifetime=settings.EXCHANGED_TOKEN_LIFETIME_SECONDS,
        )
        token, _, _ = oauth.act_on_behalf(
            subject, identity, scope=EXCHANGED_SCOPES, audience=settings.EXCHANGE_DEFAULT_AUDIENCE
        )
    except oauth.OAuthError as exc:
        raise RuntimeRejected(f"The agent may not act for you here ({exc.error}).")
    except tokens.InvalidToken as exc:
        raise RuntimeRejected(f"Your access could not be confirmed ({exc.reason}).")
    return token


def tenant_headers(tenant: Tenant, token: str, invocation: Invocation) -> dict[str, str]:
    prefix = "X-Amzn-Bedrock-AgentCore-Runtime-Custom-"
    features = sorted(entitlements.effective_entitlements(tenant))
    return {
        f"{prefix}Tenant-Id": str(tenant.pk),
        f"{prefix}Tier": tenant.tier.slug,
        f"{prefix}Region": tenant.region,
        f"{prefix}Deployment-Model": tenant.deployment_model,
        f"{prefix}Entitlements": ",".join(features),
        f"{prefix}Feature-Flags": ",".join(f for f in features if f in settings.RUNTIME_FEATURE_FLAGS),
        "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id": invocation.conversation.runtime_session_id,
        "X-Amzn-Bedrock-AgentCore-Runtime-User-Id": f"user-{invocation.user_id}",
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


def build_request(invocation: Invocation) -> dict:
    history = list(
        Message.objects.filter(conversation=invocation.conversation, created_at__lt=invocation.user_message.created_at)
        .filter(status=MessageStatus.DONE)
        .order_by("-created_at", "-id")
        .values("role", "content")[:HISTORY_MESSAGES]
    )[::-1]
    offering = model_offering(invocation)
    return {
        "invocation_id": str(invocation.pk),
        "prompt": invocation.user_message.content,
        "messages": history,
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


def runtime_kind(tenant: Tenant) -> str:
    """A silo tenant's own runtime (bindings) wins over the platform's (AGENT_RUNTIME)."""
    bindings = tenant.bindings
    if bindings.runtime_arn and settings.AGENT_RUNTIME == "agentcore":
        return "agentcore"
    return settings.AGENT_RUNTIME


_local_client = None


def client_for(kind: str, tenant: Tenant):
    """The runtime client for a tenant: its own AgentCore runtime (silo bindings),
    the platform's, an HTTP runtime, or the in-process reference agent."""
    from agents.runtime import clients

    global _local_client
    if kind == "agentcore":
        arn = tenant.bindings.runtime_arn or settings.AGENTCORE_RUNTIME_ARN
        if not arn:
            raise RuntimeRejected("No AgentCore runtime is configured for this tenant.")
        return clients.AgentCoreRuntimeClient(arn, qualifier=settings.AGENTCORE_QUALIFIER, region_name=tenant.region)
    if kind == "http":
        return clients.HttpRuntimeClient(settings.RUNTIME_URL, timeout=settings.RUNTIME_TIMEOUT_SECONDS)
    if _local_client is None:
        from agents.knowledge.gateway import InProcessKnowledgeGateway
        from tenants.identity import keys

        # Same verification as a remote runtime: our JWKS, our issuer, aud=agent-runtime.
        # Retrieval goes through the same token validation + service as the HTTP gateway.
        _local_client = clients.LocalRuntimeClient.from_jwks(
            keys.jwks,
            issuer=settings.TOKEN_ISSUER,
            audience=settings.EXCHANGE_DEFAULT_AUDIENCE,
            knowledge=InProcessKnowledgeGateway(),
        )
    return _local_client


def invoke(tenant: Tenant, invocation: Invocation) -> Iterator[dict]:
    from agents.runtime import clients
    from agents.runtime.contract import InvocationContext, InvocationRequest

    # Everything before the call in one short transaction: about ten queries, which on
    # PostgreSQL would otherwise each pay BEGIN + tenant set_config + COMMIT round trips.
    # It ends before the runtime is called, so no transaction stays open during a turn.
    with transaction.atomic():
        if not Invocation.user_message.is_cached(invocation):
            invocation.user_message = Message.objects.get(pk=invocation.user_message_id)
        token = mint_act_on_behalf_token(tenant, invocation)
        headers = tenant_headers(tenant, token, invocation)
        request = build_request(invocation)
        kind = runtime_kind(tenant)  # recorded on the invocation when the turn was claimed
    invocation._runtime_called = (time.time(), time.perf_counter())  # for the turn's trace
    try:
        client = client_for(kind, tenant)
        events = client.invoke(InvocationRequest.from_dict(request), InvocationContext.from_headers(headers))
        for event in events:
            data = event.to_dict()
            if data.get("type") == "error" and data.get("retryable"):
                raise TransientRuntimeError(data.get("message") or "The runtime asked for a retry.")
            yield data
    except clients.TransientRuntimeError as exc:
        raise TransientRuntimeError(str(exc)) from exc
    except clients.RuntimeClientError as exc:
        # The client's message can name internal hosts; the person gets a plain reason.
        log.warning("invocation %s: runtime refused the turn: %s", invocation.pk, exc)
        raise RuntimeRejected("The agent runtime could not answer this turn.") from exc

"""Memory for agents and for people: the gateway's two functions and the Memory page's.

`recall_for_token` and `remember_for_token` are the bodies of the gateway endpoints
(agents/memory/api.py) and of the in-process gateway of the local runtime
(agents/memory/gateway.py), like knowledge.services.retrieve_for_token: the raw
act-on-behalf token is validated by the one validation function (aud agent-runtime),
must carry memory:read / memory:write and an actor, and everything happens in the
token's tenant, for the token's member (`sub`), whatever the body says. Which
namespaces that reaches is decided by agents/memory/policy.py.
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied
from django.db.models import Count

from agents.memory import policy, stores
from agents.memory.models import MAX_CONTENT_CHARS, MemoryRecord
from agents.memory.policy import Namespace
from tenants import audit, entitlements
from tenants.context import require_tenant
from tenants.identity.gateway import GatewayRefused, agent_call
from tenants.services import Actor, ServiceError

log = logging.getLogger(__name__)

FEATURE = "memory"
READ_SCOPE = "memory:read"
WRITE_SCOPE = "memory:write"
DEFAULT_K = 5


def entitled(tenant) -> bool:
    return entitlements.has_feature(tenant, FEATURE)


def _memory_call(raw_token: str, scope: str, agent_slug: str, tenant_id, check_input):
    """The gateways' prologue for memory: a member's act-on-behalf token, then the memory
    gateway's own refusals (the plan, then `check_input()`), then the acting agent."""

    def precheck(tenant) -> None:
        if not entitled(tenant):
            raise GatewayRefused(403, f"Memory is not part of the {tenant.tier.name} plan.")
        check_input()

    return agent_call(
        raw_token,
        scope,
        agent_slug,
        tenant_id=tenant_id,
        member_required=True,
        precheck=precheck,
        name="memory gateway",
    )


def recall_for_token(
    raw_token: str, *, query: str, k: int = DEFAULT_K, agent_slug: str = "", tenant_id: str | None = None
) -> list[dict]:
    """The acting member's memories (theirs for this agent, theirs for all agents, the
    tenant's shared ones) that match `query`, best first."""

    def check_input() -> None:
        if not isinstance(query, str) or not query.strip():
            raise GatewayRefused(400, "query: give the text to recall memories for.")

    with _memory_call(raw_token, READ_SCOPE, agent_slug, tenant_id, check_input) as call:
        tenant, user_id = call.tenant, call.user.pk
        spaces = policy.readable_namespaces(tenant_id=tenant.pk, user_id=user_id, agent_slug=call.agent.slug)
        spaces = [s for s in spaces if policy.can_read(s, tenant_id=tenant.pk, user_id=user_id)]
        try:
            memories = stores.store_for(tenant).recall(spaces, query, k)
        except stores.StoreUnavailable as exc:
            log.warning("memory recall for tenant %s failed: %s", tenant.pk, exc)
            raise GatewayRefused(503, "The memory store is unavailable; try again later.")
        return [m.to_dict() for m in memories]


def remember_for_token(
    raw_token: str,
    *,
    content: str,
    agent_slug: str = "",
    scope: str = policy.Scope.AGENT,
    tenant_id: str | None = None,
) -> dict:
    """Store one fact on behalf of the token's member, in the namespace `scope` names."""
    from agents.runtime_gateway import turn_in_progress

    def check_input() -> None:
        if not isinstance(content, str) or not content.strip():
            raise GatewayRefused(400, "content: give the fact to remember.")
        if len(content) > MAX_CONTENT_CHARS:
            raise GatewayRefused(400, f"content: at most {MAX_CONTENT_CHARS} characters.")
        if scope not in policy.Scope.CHOICES:
            raise GatewayRefused(400, f"scope: one of {', '.join(policy.Scope.CHOICES)}.")

    with _memory_call(raw_token, WRITE_SCOPE, agent_slug, tenant_id, check_input) as call:
        tenant, user, agent, token = call.tenant, call.user, call.agent, call.token
        namespace = policy.namespace_for(scope, tenant_id=tenant.pk, user_id=user.pk, agent_slug=agent.slug)
        if not policy.can_write(namespace, tenant_id=tenant.pk, user_id=user.pk, role=token.membership.role):
            raise GatewayRefused(403, "Only an owner or admin may write the tenant's shared memory.")
        turn = turn_in_progress(token)
        writer = stores.Writer(
            user_id=user.pk,
            agent_id=agent.pk,
            session_id=str(token.claims.get("session_id") or ""),
            invocation_id=turn.pk if turn is not None else None,
        )
        try:
            memory = stores.store_for(tenant).remember(namespace, " ".join(content.split()), writer)
        except stores.StoreUnavailable as exc:
            log.warning("memory remember for tenant %s failed: %s", tenant.pk, exc)
            raise GatewayRefused(503, "The memory store is unavailable; try again later.")
        return memory.to_dict()


# --- the Memory page ------------------------------------------------------------------------------


def scopes_agent_lacks_for_memory(agent) -> list[str]:
    """The memory scopes `agent`'s workload identity may not use (sorted; empty: none missing).

    A turn's token asks for memory:read and memory:write only when the identity allows
    both (runtime_gateway.exchanged_scope; empty allowed_scopes means unrestricted), so an
    agent missing either neither recalls nor remembers, whatever the plan includes."""
    from tenants.identity.scopes import MEMORY_SCOPES

    identity = agent.identity
    if identity is None:
        return sorted(MEMORY_SCOPES)
    allowed = set(identity.allowed_scopes or MEMORY_SCOPES)
    return sorted(MEMORY_SCOPES - allowed)


def own_memories(user, agent=None):
    """The signed-in member's own memories (in the current tenant), per agent if given."""
    require_tenant()
    records = MemoryRecord.objects.filter(user=user).select_related("agent")
    return records.filter(agent=agent) if agent is not None else records


def _local_id(record_id: int | str) -> int | None:
    """The table's pk `record_id` names, or None (an AgentCore id, or not a row's pk)."""
    from django.http import Http404

    from tenants.access import int_or_404

    try:
        return int_or_404(record_id)
    except Http404:
        return None


def _agentcore_store(tenant) -> stores.AgentCoreStore | None:
    store = stores.store_for(tenant)
    return store if isinstance(store, stores.AgentCoreStore) else None


DELETE_FAILED = "AgentCore Memory did not delete the memory"


def _delete_in_agentcore(store, actor: Actor, tenant, record_id, *, shared: bool) -> bool:
    """Delete AgentCore record `record_id` if it is in a namespace `actor` may write and that
    is (`shared`) or is not the tenant's shared one; audited like the local table's."""

    def may_delete(namespace: Namespace) -> bool:
        return namespace.shared == shared and policy.can_write(
            namespace, tenant_id=tenant.pk, user_id=actor.user.pk, role=actor.role
        )

    try:
        namespace = store.delete(str(record_id), may_delete)
    except stores.StoreUnavailable as exc:
        log.warning("memory deletion for tenant %s failed: %s", tenant.pk, exc)
        raise ServiceError(f"{DELETE_FAILED}: {exc.reason}. Nothing was deleted. {exc.advice}") from exc
    if namespace is None:
        return False
    audit.record(
        "memory.shared_deleted" if shared else "memory.deleted",
        actor=actor.user,
        tenant=tenant,
        target_repr=f"{namespace.path} #{record_id}",
        after={"store": stores.AgentCoreStore.name},
        ip=actor.ip,
    )
    return True


def delete_own_memory(actor: Actor, record_id: int | str) -> bool:
    """Delete one of the member's own memories; False when it is not theirs (or gone).
    Raises ServiceError when the tenant's AgentCore Memory cannot be asked."""
    tenant = require_tenant()
    store = _agentcore_store(tenant)
    if store is not None:
        return _delete_in_agentcore(store, actor, tenant, record_id, shared=False)
    pk = _local_id(record_id)
    record = MemoryRecord.objects.filter(pk=pk, user=actor.user).first() if pk is not None else None
    if record is None:
        return False
    namespace = policy.parse(record.namespace)
    if namespace is None or not policy.can_write(
        namespace, tenant_id=tenant.pk, user_id=actor.user.pk, role=actor.membership.role
    ):
        return False
    record.delete()
    audit.record(
        "memory.deleted",
        actor=actor.user,
        tenant=tenant,
        target_repr=f"{namespace.path} #{record_id}",
        ip=actor.ip,
    )
    return True


def counts_per_member() -> list[dict]:
    """How many memories each member has (never their contents), for tenant admins."""
    from tenants.models import Membership

    require_tenant()
    counts = dict(
        MemoryRecord.objects.filter(user__isnull=False).values_list("user_id").annotate(n=Count("id")).order_by()
    )
    members = Membership.objects.select_related("user").order_by("user__email")
    return [{"membership": m, "user": m.user, "count": counts.get(m.user_id, 0)} for m in members]


def clear_member_memory(actor: Actor, membership) -> int:
    """Delete every memory of `membership`'s member (an admin action; audited)."""
    tenant = require_tenant()
    if not policy.can_administer(actor.role):
        raise PermissionDenied("Only an owner or admin may clear a member's memory.")
    deleted, _ = MemoryRecord.objects.filter(user_id=membership.user_id).delete()
    audit.record(
        "memory.cleared",
        actor=actor.user,
        tenant=tenant,
        target=membership,
        target_repr=membership.user.email,
        after={"deleted": deleted},
        ip=actor.ip,
    )
    return deleted


# --- the tenant's shared memory (/tenant/<t>/shared) ---------------------------------------------
# Read by every member's agents, written only by owners and admins (policy.can_write). Audit
# entries name the namespace and the record, never the text, like clearing a member's memory.


def shared_memories():
    """The tenant's shared memories in the local table, newest first."""
    tenant = require_tenant()
    return MemoryRecord.objects.filter(namespace=Namespace(tenant.pk).path, user__isnull=True)


def _require_shared_writer(actor: Actor, tenant) -> Namespace:
    namespace = Namespace(tenant.pk)
    if not policy.can_write(namespace, tenant_id=tenant.pk, user_id=actor.user.pk, role=actor.role):
        raise PermissionDenied("Only an owner or admin may change the tenant's shared memory.")
    return namespace


def add_shared_memory(actor: Actor, content: str) -> str:
    """Keep one fact for all of the tenant's agents and members (owners and admins), in the
    tenant's store; audited. The kept record's id (the table's pk, or AgentCore's record id)."""
    tenant = require_tenant()
    namespace = _require_shared_writer(actor, tenant)
    text = " ".join((content or "").split())
    if not text:
        raise ServiceError("Write the fact to share with every agent.")
    if len(text) > MAX_CONTENT_CHARS:
        raise ServiceError(f"A memory holds at most {MAX_CONTENT_CHARS} characters.")
    if not entitled(tenant):
        raise ServiceError(f"Long-term memory is not part of the {tenant.tier.name} plan.")
    store = _agentcore_store(tenant)
    if store is not None:
        try:
            record_id = store.create(namespace, text)
        except stores.StoreUnavailable as exc:
            log.warning("shared memory for tenant %s not kept: %s", tenant.pk, exc)
            raise ServiceError(
                f"AgentCore Memory did not keep the fact: {exc.reason}. Nothing was saved. {exc.advice}"
            ) from exc
        after = {"store": stores.AgentCoreStore.name}
    else:
        record_id = str(MemoryRecord.objects.create(namespace=namespace.path, content=text).pk)
        after = None
    audit.record(
        "memory.shared_added",
        actor=actor.user,
        tenant=tenant,
        target_repr=f"{namespace.path} #{record_id}",
        after=after,
        ip=actor.ip,
    )
    return record_id


def delete_shared_memory(actor: Actor, record_id: int | str) -> bool:
    """Delete one shared memory (owners and admins); False when there is no such shared record here.
    Raises ServiceError when the tenant's AgentCore Memory cannot be asked."""
    tenant = require_tenant()
    namespace = _require_shared_writer(actor, tenant)
    store = _agentcore_store(tenant)
    if store is not None:
        return _delete_in_agentcore(store, actor, tenant, record_id, shared=True)
    pk = _local_id(record_id)
    record = shared_memories().filter(pk=pk).first() if pk is not None else None
    if record is None:
        return False
    record.delete()
    audit.record(
        "memory.shared_deleted",
        actor=actor.user,
        tenant=tenant,
        target_repr=f"{namespace.path} #{record_id}",
        ip=actor.ip,
    )
    return True


def unused_memory_binding(tenant) -> str:
    """The AgentCore Memory id `tenant` is bound to but that this portal does not use (it runs
    on embedded defaults, AGENT_RUNTIME=local, so its memories are in the portal's own
    table); "" when it has none, or uses it."""
    from django.conf import settings

    bindings = tenant.bindings
    if bindings.dedicated and bindings.memory_id and not bindings.dedicated_memory(settings.AGENT_RUNTIME):
        return bindings.memory_id
    return ""


def agentcore_memories(tenant, user) -> list[stores.ListedMemory] | None:
    """The member's and the shared memories from the tenant's AgentCore Memory, or None when
    the tenant's memories are in the local table. Raises stores.StoreUnavailable."""
    store = _agentcore_store(tenant)
    if store is None:
        return None
    return store.list(tenant_id=tenant.pk, user_id=user.pk)

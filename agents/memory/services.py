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

import hashlib
import json
import logging
import operator
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import reduce

from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q
from django.utils import timezone

from agents.memory import policy, stores
from agents.memory.models import MAX_CONTENT_CHARS, MemoryRecord
from agents.memory.policy import Namespace
from portal.cache import next_generation, optional_cache
from tenants import audit, entitlements
from tenants.context import require_tenant
from tenants.identity.gateway import GatewayRefused, agent_call
from tenants.services import Actor, ServiceError

log = logging.getLogger(__name__)

FEATURE = "memory"
READ_SCOPE = "memory:read"
WRITE_SCOPE = "memory:write"
DEFAULT_K = 5


class MemoryStoreError(ServiceError):
    """The tenant's AgentCore Memory failed: the message is fit for a person; `transient`
    whether trying again later may help (the API answers 503) or the set-up must be fixed
    (502: AWS refused the portal)."""

    def __init__(self, message: str, *, transient: bool):
        super().__init__(message)
        self.transient = transient


def _store_error(what: str, exc: stores.StoreUnavailable, nothing: str) -> MemoryStoreError:
    return MemoryStoreError(f"{what}: {exc.reason}. {nothing} {exc.advice}", transient=exc.transient)


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
        store = stores.store_for(tenant)
        try:
            memory = store.remember(namespace, " ".join(content.split()), writer)
        except stores.StoreUnavailable as exc:
            log.warning("memory remember for tenant %s failed: %s", tenant.pk, exc)
            raise GatewayRefused(503, "The memory store is unavailable; try again later.")
        finally:
            if isinstance(store, stores.AgentCoreStore):
                _listings_changed(namespace)
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
KEEP_FAILED = "AgentCore Memory did not keep the fact"
LIST_FAILED = "AgentCore Memory did not list the memories"


def _delete_in_agentcore(store, actor: Actor, tenant, record_id, *, shared: bool | None) -> bool:
    """Delete AgentCore record `record_id` if it is in a namespace `actor` may write and that
    is (`shared`) or is not (not `shared`) the tenant's shared one, or either (None); audited
    like the local table's. PermissionDenied (with `shared` None) for a shared record that
    `actor` may read but not write: a member sees shared records, so "not found" would lie."""
    refused_shared = []

    def may_delete(namespace: Namespace) -> bool:
        if shared is not None and namespace.shared != shared:
            return False
        allowed = policy.can_write(namespace, tenant_id=tenant.pk, user_id=actor.user.pk, role=actor.role)
        if not allowed and namespace.shared and namespace.tenant_id == tenant.pk:
            refused_shared.append(namespace)
        return allowed

    try:
        namespace = store.delete(str(record_id), may_delete)
    except stores.StoreUnavailable as exc:
        # AgentCore may have deleted the record before failing, in a namespace not known here.
        _listings_changed(Namespace(tenant.pk, actor.user.pk), Namespace(tenant.pk))
        log.warning("memory deletion for tenant %s failed: %s", tenant.pk, exc)
        raise _store_error(DELETE_FAILED, exc, "Nothing was deleted.") from exc
    if namespace is None:
        if shared is None and refused_shared:
            raise PermissionDenied(SHARED_WRITERS_ONLY)
        return False
    _listings_changed(namespace)
    audit.record(
        "memory.shared_deleted" if namespace.shared else "memory.deleted",
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
    """How many memories each member has (never their contents), for tenant admins. For a
    tenant on AgentCore Memory `count` is None: counting there takes one walk of
    ListMemoryRecords per member, so it is asked for one member at a time (count_member_memory)."""
    from tenants.models import Membership

    tenant = require_tenant()
    members = Membership.objects.select_related("user").order_by("user__email")
    if _agentcore_store(tenant) is not None:
        return [{"membership": m, "user": m.user, "count": None, "more": False} for m in members]
    counts = dict(
        MemoryRecord.objects.filter(user__isnull=False).values_list("user_id").annotate(n=Count("id")).order_by()
    )
    return [{"membership": m, "user": m.user, "count": counts.get(m.user_id, 0), "more": False} for m in members]


def count_member_memory(actor: Actor, membership) -> tuple[int, bool]:
    """How many memories `membership`'s member has (an admin's question; never the contents),
    and whether there are more than that (AgentCore counts up to stores.MEMBER_CAP).
    Raises MemoryStoreError when the tenant's AgentCore Memory cannot be asked."""
    tenant = require_tenant()
    if not policy.can_administer(actor.role):
        raise PermissionDenied(ADMINISTERS_ONLY)
    store = _agentcore_store(tenant)
    if store is None:
        return MemoryRecord.objects.filter(user_id=membership.user_id).count(), False
    try:
        return store.count_member(tenant_id=tenant.pk, user_id=membership.user_id)
    except stores.StoreUnavailable as exc:
        log.warning("memory count for tenant %s failed: %s", tenant.pk, exc)
        raise _store_error(LIST_FAILED, exc, "Nothing was counted.") from exc


ADMINISTERS_ONLY = "Only an owner or admin may count or clear a member's memory."
CLEAR_FAILED = "AgentCore Memory did not clear the memories"


def clear_member_memory(actor: Actor, membership) -> stores.Cleared:
    """Delete every memory of `membership`'s member (an admin action; audited). On AgentCore
    Memory at most stores.MEMBER_CAP go in one call (`more` says that some remain); raises
    MemoryStoreError when it cannot be asked (nothing was deleted then)."""
    tenant = require_tenant()
    if not policy.can_administer(actor.role):
        raise PermissionDenied(ADMINISTERS_ONLY)
    store = _agentcore_store(tenant)
    if store is None:
        deleted, _ = MemoryRecord.objects.filter(user_id=membership.user_id).delete()
        cleared, after = stores.Cleared(deleted), {"deleted": deleted}
    else:
        try:
            cleared = store.clear_member(tenant_id=tenant.pk, user_id=membership.user_id)
        except stores.StoreUnavailable as exc:
            log.warning("clearing a member's memory for tenant %s failed: %s", tenant.pk, exc)
            raise _store_error(CLEAR_FAILED, exc, "Nothing was deleted.") from exc
        finally:
            _listings_changed(Namespace(tenant.pk, membership.user_id))
        after = {"deleted": cleared.deleted, "store": stores.AgentCoreStore.name}
        if cleared.failed:
            after["failed"] = cleared.failed
        if cleared.more:
            after["more"] = True
    audit.record(
        "memory.cleared",
        actor=actor.user,
        tenant=tenant,
        target=membership,
        target_repr=membership.user.email,
        after=after,
        ip=actor.ip,
    )
    return cleared


# --- the tenant's shared memory (/tenant/<t>/shared) ---------------------------------------------
# Read by every member's agents, written only by owners and admins (policy.can_write). Audit
# entries name the namespace and the record, never the text, like clearing a member's memory.


def shared_memories():
    """The tenant's shared memories in the local table, newest first."""
    tenant = require_tenant()
    return MemoryRecord.objects.filter(namespace=Namespace(tenant.pk).path, user__isnull=True)


SHARED_WRITERS_ONLY = "Only an owner or admin may change the tenant's shared memory."


def _require_shared_writer(actor: Actor, tenant) -> Namespace:
    namespace = Namespace(tenant.pk)
    if not policy.can_write(namespace, tenant_id=tenant.pk, user_id=actor.user.pk, role=actor.role):
        raise PermissionDenied(SHARED_WRITERS_ONLY)
    return namespace


def _keep(tenant, namespace: Namespace, text: str, *, empty: str, user=None, agent=None) -> tuple[str, dict | None]:
    """Keep `text` (already whitespace-normalised) in `namespace`, in the tenant's store, after
    the checks every add shares; (record id, what the audit entry adds). The caller has checked
    that the actor may write `namespace` and audits the add under its own label."""
    if not text:
        raise ServiceError(empty)
    if len(text) > MAX_CONTENT_CHARS:
        raise ServiceError(f"A memory holds at most {MAX_CONTENT_CHARS} characters.")
    if not entitled(tenant):
        raise ServiceError(f"Long-term memory is not part of the {tenant.tier.name} plan.")
    store = _agentcore_store(tenant)
    if store is not None:
        try:
            record_id = store.create(namespace, text)
        except stores.StoreUnavailable as exc:
            log.warning("memory in %s for tenant %s not kept: %s", namespace.path, tenant.pk, exc)
            raise _store_error(KEEP_FAILED, exc, "Nothing was saved.") from exc
        finally:
            _listings_changed(namespace)  # also a failure: AgentCore may have kept it before failing
        return record_id, {"store": stores.AgentCoreStore.name}
    record = MemoryRecord.objects.create(namespace=namespace.path, user=user, agent=agent, content=text)
    return str(record.pk), None


def add_shared_memory(actor: Actor, content: str) -> str:
    """Keep one fact for all of the tenant's agents and members (owners and admins), in the
    tenant's store; audited. The kept record's id (the table's pk, or AgentCore's record id)."""
    tenant = require_tenant()
    namespace = _require_shared_writer(actor, tenant)
    text = " ".join((content or "").split())
    record_id, after = _keep(tenant, namespace, text, empty="Write the fact to share with every agent.")
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


def agentcore_memories(tenant, user) -> stores.Listing | None:
    """The member's and the shared memories from the tenant's AgentCore Memory (at most
    stores.LIST_CAP of each kind), or None when the tenant's memories are in the local table.
    Raises stores.StoreUnavailable."""
    store = _agentcore_store(tenant)
    if store is None:
        return None
    return store.list(tenant_id=tenant.pk, user_id=user.pk)


# --- the REST API (agents/memory/api.py): a person's memories, one list for both stores -----------


@dataclass(frozen=True)
class Item:
    """One memory as the API shows it, whichever store keeps it. `id` is what deleting takes:
    the table's pk, or AgentCore's memoryRecordId."""

    id: str
    content: str
    namespace: Namespace
    created_at: datetime | None

    @property
    def scope(self) -> str:
        if self.namespace.shared:
            return policy.Scope.SHARED
        return policy.Scope.AGENT if self.namespace.agent_slug else policy.Scope.USER

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "content": self.content,
            "scope": self.scope,
            "agent": self.namespace.agent_slug or None,
            "namespace": self.namespace.path,
            "created_at": self.created_at,
        }


@dataclass(frozen=True)
class MemoryListing:
    """Memories as the API lists them (a list from AgentCore, or the portal's table counted and
    sliced in SQL); `truncated` when AgentCore holds more of a kind than stores.LIST_CAP, which
    are not among them. The portal's table is always listed whole."""

    items: Sequence[Item]
    truncated: bool = False


MINE = "mine"
SHARED = "shared"
LIST_SCOPES = (MINE, SHARED)


def _item_of(record: MemoryRecord) -> Item | None:
    namespace = policy.parse(record.namespace)
    return Item(str(record.pk), record.content, namespace, record.created_at) if namespace else None


def memories_of(actor: Actor, *, scope: str | None = None, agent=None, query: str = "") -> MemoryListing:
    """What `actor` may read (policy.can_read: their own namespaces and the tenant's shared
    one, in this tenant), newest first; `scope` MINE or SHARED narrows to one kind, `agent`
    to the member's own for that agent, `query` to those whose text contains it (any case).

    The portal's table is filtered in SQL and lists everything; from AgentCore Memory at
    most stores.LIST_CAP records of each kind are listed (AgentCoreStore.list, as the Memory
    page), and the answer's `truncated` says when there were more; that listing is kept for
    LISTING_TTL, so the API's next pages do not walk AgentCore again (see below).
    Raises MemoryStoreError when the tenant's AgentCore Memory cannot be asked."""
    tenant = require_tenant()
    store = _agentcore_store(tenant)
    wants_mine = scope in (None, MINE)
    wants_shared = scope in (None, SHARED) and agent is None
    if store is not None:
        # The key (with its generations) before the walk: a write during the walk moves a
        # generation, so what this walk saw is kept under a key no later request asks for.
        key = _listing_key(store, tenant.pk, actor.user.pk, scope, agent.slug if agent is not None else "", query)
        cached = optional_cache.get(key) if key is not None else None
        if cached is not None:
            return _listing_from_cache(cached)
        try:
            listed = store.list(tenant_id=tenant.pk, user_id=actor.user.pk)
        except stores.StoreUnavailable as exc:
            log.warning("memory listing for tenant %s failed: %s", tenant.pk, exc)
            raise _store_error(LIST_FAILED, exc, "Nothing was listed.") from exc
        needle = query.casefold()
        items = [
            Item(m.id, m.content, m.namespace, m.created_at)
            for m in listed.memories
            if (wants_shared if m.namespace.shared else wants_mine)
            and (agent is None or m.namespace.agent_slug == agent.slug)
            and needle in m.content.casefold()
        ]
        listing = MemoryListing(items, truncated=listed.truncated)
        if key is not None:
            optional_cache.set(key, _listing_for_cache(listing), LISTING_TTL)
        return listing
    mine = Q(user=actor.user) if agent is None else Q(user=actor.user, agent=agent)
    shared = Q(user__isnull=True, namespace=Namespace(tenant.pk).path)
    wanted = [q for q, on in ((mine, wants_mine), (shared, wants_shared)) if on]
    if not wanted:
        return MemoryListing([])
    records = MemoryRecord.objects.filter(reduce(operator.or_, wanted))
    if query:
        records = records.filter(content__icontains=query)
    return MemoryListing(_Rows(records.order_by("-created_at", "-id")))


# --- AgentCore listings, kept briefly for the API's next pages ------------------------------------
# The API answers 50 memories a page, but a listing from AgentCore is a walk of ListMemoryRecords
# (up to 20 calls, each billed by AWS) that no page can be cut from, so every page of 1,000
# memories would walk it all again: the walk is kept in Django's cache for LISTING_TTL and
# pages are sliced from it. Every write the portal makes moves a generation that is part of
# the key, so the member never pages on past a memory they (or an agent for them, or an
# admin) changed; the TTL bounds what the portal does not see (records AgentCore's own
# strategies derive from a runtime's events) and is short because a paging person reads
# quickly. The local table needs none of this: it is counted and sliced in SQL.

LISTING_TTL = 60  # seconds
# How long an untouched generation is kept: any value is safe (a missing one starts again
# from the clock, past every earlier one), this one only keeps Redis from filling with them.
GENERATION_TTL = 24 * 3600


def _generation_key(namespace: Namespace) -> str:
    """What a write to `namespace` makes stale: the tenant's shared namespace is in every
    member's listing, a member's own namespaces only in theirs."""
    if namespace.shared:
        return f"memory:listing-gen:{namespace.tenant_id}"
    return f"memory:listing-gen:{namespace.tenant_id}:{namespace.user_id}"


def _listings_changed(*namespaces: Namespace) -> None:
    """A write to `namespaces` was made (or tried: AgentCore may have done it before failing to
    answer): the listings that show them are stale from now on."""
    for key in {_generation_key(n) for n in namespaces}:
        next_generation(key, GENERATION_TTL)


def _listing_key(store, tenant_id: int, user_id: int, scope: str | None, agent_slug: str, query: str) -> str | None:
    """The cache key of one member's filtered listing: the tenant and member in clear (a listing
    answers no one else), their generations (a write moves one: _listings_changed), the rest (the
    memory, the filters, the query's text) hashed. None when the cache keeps no generation."""
    gen_keys = [_generation_key(Namespace(tenant_id)), _generation_key(Namespace(tenant_id, user_id))]
    gens = optional_cache.get_many(gen_keys)
    for key in gen_keys:
        if key not in gens:
            # From the clock, not from 0: a generation evicted after writes moved it must not
            # come back as a value that listings from before those writes were kept under.
            optional_cache.add(key, time.time_ns(), GENERATION_TTL)
            gens[key] = optional_cache.get(key)
    if any(gens[key] is None for key in gen_keys):
        return None
    what = json.dumps([store.memory_id, scope or "", agent_slug, query])
    digest = hashlib.sha256(what.encode()).hexdigest()
    return f"memory:listing:{tenant_id}:{user_id}:{gens[gen_keys[0]]}:{gens[gen_keys[1]]}:{digest}"


def _listing_for_cache(listing: MemoryListing) -> dict:
    # Plain values, not Item objects: an entry written by the previous release still reads.
    items = [
        {"id": i.id, "content": i.content, "namespace": i.namespace.path, "created_at": i.created_at}
        for i in listing.items
    ]
    return {"items": items, "truncated": listing.truncated}


def _listing_from_cache(cached: dict) -> MemoryListing:
    items = [
        Item(row["id"], row["content"], namespace, row["created_at"])
        for row in cached["items"]
        if (namespace := policy.parse(row["namespace"])) is not None
    ]
    return MemoryListing(items, truncated=cached["truncated"])


class _Rows:
    """The table's rows as Item objects, counted and sliced in SQL: what a paginator asks of a list."""

    def __init__(self, records):
        self.records = records

    def __len__(self) -> int:
        return self.records.count()

    def __getitem__(self, index: slice) -> list[Item]:
        return [item for item in map(_item_of, self.records[index]) if item is not None]


def add_memory(actor: Actor, content: str, *, scope: str, agent=None) -> Item:
    """Keep one fact: the member's own for `agent` (scope agent) or for all agents (user), or
    the tenant's shared one (shared: owners and admins), in the tenant's store; audited
    (memory.added, or the page's memory.shared_added), without the text.
    Raises PermissionDenied, ServiceError (bad input, not in the plan) or MemoryStoreError."""
    tenant = require_tenant()
    text = " ".join((content or "").split())
    if scope == policy.Scope.SHARED:
        record_id = add_shared_memory(actor, text)
        return Item(record_id, text, Namespace(tenant.pk), _created_at(tenant, record_id))
    namespace = policy.namespace_for(
        scope, tenant_id=tenant.pk, user_id=actor.user.pk, agent_slug=agent.slug if agent is not None else ""
    )
    if not policy.can_write(namespace, tenant_id=tenant.pk, user_id=actor.user.pk, role=actor.role):
        raise PermissionDenied("Only the member may change their own memory.")
    record_id, after = _keep(
        tenant,
        namespace,
        text,
        empty="Write the fact to remember.",
        user=actor.user,
        agent=agent if namespace.agent_slug else None,
    )
    audit.record(
        "memory.added",
        actor=actor.user,
        tenant=tenant,
        target_repr=f"{namespace.path} #{record_id}",
        after=after,
        ip=actor.ip,
    )
    return Item(record_id, text, namespace, _created_at(tenant, record_id))


def _created_at(tenant, record_id: str) -> datetime | None:
    if _agentcore_store(tenant) is not None:
        return timezone.now()  # AgentCore stamps the record with the timestamp the portal sent
    return MemoryRecord.objects.filter(pk=int(record_id)).values_list("created_at", flat=True).first()


def delete_memory(actor: Actor, record_id: int | str) -> bool:
    """Delete one memory `actor` may write: their own, or (owners and admins) a shared one;
    audited with the page's labels. False when there is no such record of theirs or of the
    tenant's shared ones (a colleague's is "not found", never "forbidden"); PermissionDenied
    for a shared record and a member who may only read it. Raises MemoryStoreError."""
    tenant = require_tenant()
    store = _agentcore_store(tenant)
    if store is not None:
        return _delete_in_agentcore(store, actor, tenant, record_id, shared=None)
    pk = _local_id(record_id)
    shared_path = Namespace(tenant.pk).path
    record = (
        MemoryRecord.objects.filter(Q(user=actor.user) | Q(user__isnull=True, namespace=shared_path), pk=pk).first()
        if pk is not None
        else None
    )
    if record is None:
        return False
    namespace = policy.parse(record.namespace)
    if namespace is None:
        return False
    if namespace.shared:
        return delete_shared_memory(actor, record.pk)  # raises PermissionDenied for a member
    return delete_own_memory(actor, record.pk)


def cleared_message(cleared: stores.Cleared, email: str) -> str:
    """What clearing a member's memory did, for the admin who asked (the page and the API)."""
    text = f"{cleared.deleted} memor{'y' if cleared.deleted == 1 else 'ies'} of {email} cleared."
    if cleared.failed:
        text += f" {cleared.failed} could not be deleted ({cleared.failure}); clear again to retry."
    if cleared.more:
        text += (
            f" More remain: at most {stores.MEMBER_CAP} are cleared at a time in AgentCore Memory;"
            " clear again to delete the rest."
        )
    return text

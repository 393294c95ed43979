"""Where a tenant's memories live, chosen by its resource bindings (`store_for`).

* ``local`` (the default): the MemoryRecord table in the portal's database,
  tenant-owned (scoped manager + row-level security). Recall ranks the records of
  the searched namespaces by how many of the query's words they contain (the
  knowledge room's query words, a plural ``s`` folded), newest first among equals,
  over the newest MAX_SCAN records: a member keeps tens of facts, not thousands.
  Records sharing no word with the query are not recalled.
* ``agentcore``: a silo tenant with a bound ``memory_id`` keeps its memories in its
  own Amazon Bedrock AgentCore Memory (data plane ``bedrock-agentcore``) — unless the
  portal runs on embedded defaults (AGENT_RUNTIME=local), where AWS bindings do not
  apply and its memories are in the local table like everyone's:

  - remember = ``create_event`` with ``actorId`` = ``user-<user id>``, ``sessionId``
    = the conversation's runtime session id, one conversational USER payload with
    the fact, and metadata ``namespace`` = the portal namespace path; AgentCore's
    extraction strategies turn events into memory records asynchronously;
  - recall = ``retrieve_memory_records`` once per readable namespace, with the
    portal's namespace path as ``namespace`` (configure the memory's strategies
    with namespace templates ``/tenant/<tenant id>/user/{actorId}`` and
    ``/tenant/<tenant id>/shared``; the ``user-`` prefix of the actor is removed
    by the portal before it builds paths, see `actor_id`). A returned record is
    kept only if one of its namespaces is a namespace the caller may read.
  - the Memory page lists from AgentCore (``list_memory_records``: the member's
    namespaces by ``namespacePath`` /tenant/<t>/user/<u>, the shared one by exact
    ``namespace``), read-only, keeping a record only if the member may read one of
    its namespaces; deleting or adding AgentCore records is done in AWS.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from agents.memory.models import MAX_CONTENT_CHARS, MemoryRecord
from agents.memory.policy import Namespace

log = logging.getLogger(__name__)

MAX_SCAN = 500
MAX_K = 20
LIST_LIMIT = 100  # records per namespace the Memory page lists from AgentCore (its maxResults is 1-100)


class StoreUnavailable(Exception):
    """The store could not be reached or refused; the caller answers without memory."""


@dataclass(frozen=True)
class Memory:
    id: str
    content: str
    namespace: str
    created_at: str
    score: float = 0.0

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "content": self.content,
            "namespace": self.namespace,
            "created_at": self.created_at,
            "score": round(self.score, 6),
        }


@dataclass(frozen=True)
class Writer:
    """Who a remembered fact comes from: the member, the agent, the turn."""

    user_id: int
    agent_id: int | None
    session_id: str
    invocation_id: object | None = None


@dataclass(frozen=True)
class ListedMemory:
    """A record as the Memory page lists it from a store other than the local table."""

    content: str
    namespace: Namespace
    created_at: datetime | None


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _words(text: str) -> set[str]:
    from agents.knowledge.retrieval import query_terms

    return {_stem(w) for w in query_terms(text)}


def actor_id(user_id: int) -> str:
    return f"user-{user_id}"


class LocalStore:
    name = "local"

    def recall(self, namespaces: list[Namespace], query: str, k: int) -> list[Memory]:
        wanted = _words(query)
        if not wanted or not namespaces:
            return []
        rows = MemoryRecord.objects.filter(namespace__in=[n.path for n in namespaces]).order_by("-created_at", "-id")
        scored = []
        for position, record in enumerate(rows[:MAX_SCAN]):
            score = len(wanted & _words(record.content))
            if score:
                scored.append((score, position, record))
        scored.sort(key=lambda item: (-item[0], item[1]))
        return [
            Memory(
                id=f"mem-{r.pk}",
                content=r.content,
                namespace=r.namespace,
                created_at=r.created_at.isoformat(),
                score=float(s),
            )
            for s, _, r in scored[: min(k, MAX_K)]
        ]

    def remember(self, namespace: Namespace, content: str, writer: Writer) -> Memory:
        record = MemoryRecord.objects.create(
            namespace=namespace.path,
            user_id=namespace.user_id,
            agent_id=writer.agent_id if namespace.agent_slug else None,
            content=content[:MAX_CONTENT_CHARS],
            source_invocation_id=writer.invocation_id,
        )
        return Memory(
            id=f"mem-{record.pk}",
            content=record.content,
            namespace=record.namespace,
            created_at=record.created_at.isoformat(),
        )


def make_client(region: str):
    """One seam for tests (botocore Stubber) and for deployments with custom sessions."""
    import boto3

    return boto3.client("bedrock-agentcore", region_name=region)


class AgentCoreStore:
    name = "agentcore"

    def __init__(self, memory_id: str, client):
        self.memory_id = memory_id
        self.client = client

    def recall(self, namespaces: list[Namespace], query: str, k: int) -> list[Memory]:
        from botocore.exceptions import BotoCoreError, ClientError

        allowed = {n.path for n in namespaces}
        found: list[Memory] = []
        for namespace in namespaces:
            try:
                answer = self.client.retrieve_memory_records(
                    memoryId=self.memory_id,
                    namespace=namespace.path,
                    searchCriteria={"searchQuery": query[:10000], "topK": min(k, MAX_K)},
                    maxResults=min(k, MAX_K),
                )
            except (BotoCoreError, ClientError) as exc:
                raise StoreUnavailable(f"AgentCore Memory refused the recall: {exc}") from exc
            for summary in answer.get("memoryRecordSummaries", []):
                spaces = [s for s in summary.get("namespaces", []) if s in allowed]
                text = (summary.get("content") or {}).get("text", "")
                if not spaces or not text:
                    continue  # a record of a namespace the caller may not read is never answered
                created = summary.get("createdAt")
                found.append(
                    Memory(
                        id=f"agentcore-{summary['memoryRecordId']}",
                        content=text[:MAX_CONTENT_CHARS],
                        namespace=spaces[0],
                        created_at=created.isoformat() if isinstance(created, datetime) else str(created or ""),
                        score=float(summary.get("score") or 0.0),
                    )
                )
        found.sort(key=lambda m: -m.score)
        return found[: min(k, MAX_K)]

    def list(self, *, tenant_id: int, user_id: int, limit: int = LIST_LIMIT) -> list[ListedMemory]:
        """What the Memory page shows member `user_id`: their records (every namespace under
        /tenant/<t>/user/<u>) and the tenant's shared ones, newest first, at most `limit` each."""
        from botocore.exceptions import BotoCoreError, ClientError

        from agents.memory.policy import can_read, parse

        queries = [
            {"namespacePath": Namespace(tenant_id, user_id).path},
            {"namespace": Namespace(tenant_id).path},
        ]
        listed: list[ListedMemory] = []
        for query in queries:
            try:
                answer = self.client.list_memory_records(memoryId=self.memory_id, maxResults=limit, **query)
            except (BotoCoreError, ClientError) as exc:
                raise StoreUnavailable(f"AgentCore Memory refused the listing: {exc}") from exc
            for summary in answer.get("memoryRecordSummaries", []):
                spaces = [parse(path) for path in summary.get("namespaces", [])]
                readable = [n for n in spaces if n and can_read(n, tenant_id=tenant_id, user_id=user_id)]
                text = (summary.get("content") or {}).get("text", "")
                if not readable or not text:
                    continue  # a namespace the member may not read is never shown
                created = summary.get("createdAt")
                listed.append(
                    ListedMemory(
                        content=text[:MAX_CONTENT_CHARS],
                        namespace=readable[0],
                        created_at=created if isinstance(created, datetime) else None,
                    )
                )
        listed.sort(key=lambda m: m.created_at or datetime.min.replace(tzinfo=UTC), reverse=True)
        return listed

    def remember(self, namespace: Namespace, content: str, writer: Writer) -> Memory:
        from botocore.exceptions import BotoCoreError, ClientError

        now = datetime.now(UTC)
        try:
            answer = self.client.create_event(
                memoryId=self.memory_id,
                actorId=actor_id(writer.user_id),
                sessionId=writer.session_id,
                eventTimestamp=now,
                payload=[{"conversational": {"content": {"text": content[:MAX_CONTENT_CHARS]}, "role": "USER"}}],
                metadata={"namespace": {"stringValue": namespace.path}},
            )
        except (BotoCoreError, ClientError) as exc:
            raise StoreUnavailable(f"AgentCore Memory refused the event: {exc}") from exc
        return Memory(
            id=f"agentcore-event-{answer['event']['eventId']}",
            content=content[:MAX_CONTENT_CHARS],
            namespace=namespace.path,
            created_at=now.isoformat(),
        )


def store_for(tenant):
    """`agentcore` for a silo tenant with a bound memory id, else `local` — also for that
    tenant on embedded defaults (AGENT_RUNTIME=local), where AWS bindings do not apply and
    no client is made (ResourceBindings.dedicated_memory)."""
    from django.conf import settings

    memory_id = tenant.bindings.dedicated_memory(settings.AGENT_RUNTIME)
    if memory_id:
        return AgentCoreStore(memory_id, make_client(tenant.region))
    return LocalStore()

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

  - remember (the gateway's, and a shared fact an admin adds on the Memory page) =
    ``batch_create_memory_records`` with one record whose only namespace is the
    portal's namespace path: the fact lands exactly where the policy put it, at
    once, instead of in whatever namespace an extraction strategy derives from an
    event (a shared fact sent as an admin's event would end up in the admin's own
    namespace);
  - recall = ``retrieve_memory_records`` once per readable namespace, with the
    portal's namespace path as ``namespace``. A returned record is kept only if one
    of its namespaces is a namespace the caller may read (records that extraction
    strategies of the memory derive elsewhere, e.g. from a runtime's own events,
    count only if their strategy's namespace template yields portal paths);
  - delete (the Memory page) = ``get_memory_record`` in the tenant's own memory, then
    ``delete_memory_record`` with the record's namespace only when the caller may
    write that namespace (`delete`'s `may_delete`): a record id alone never says
    whose record it is, so it is looked up before anything is deleted;
  - an admin counts or clears a member's records: ``list_memory_records`` by
    ``namespacePath`` /tenant/<t>/user/<u>, following ``nextToken`` up to MEMBER_CAP,
    keeping only records whose every namespace is that member's, then (clearing)
    ``batch_delete_memory_records`` with each record's namespace, BATCH_DELETE at a time;
  - the Memory page and the API list from AgentCore (``list_memory_records``: the
    member's namespaces by ``namespacePath`` /tenant/<t>/user/<u>, the shared one by
    exact ``namespace``), following ``nextToken`` up to LIST_CAP records of each kind
    and saying when more remain, keeping a record only if the member may read one of
    its namespaces (the API keeps a walk briefly for its next pages: services.LISTING_TTL).

Every call names the tenant's own ``memory_id``; every namespace is a policy.Namespace
path. AWS failing (an error answer, no credentials, no connection) is StoreUnavailable,
whose `reason` is fit to show an admin.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from agents.memory.models import MAX_CONTENT_CHARS, MemoryRecord
from agents.memory.policy import Namespace

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_SCAN = 500
MAX_K = 20
LIST_LIMIT = 100  # records per ListMemoryRecords page (its maxResults is 1-100)
# Records of each kind (the member's, the shared) the Memory page and the API list from
# AgentCore: ten pages, so a request stays short; the listing says when there are more.
LIST_CAP = 1000
# Records one admin request counts or clears of one member in AgentCore (ten pages of
# ListMemoryRecords, then BatchDeleteMemoryRecords in batches of at most BATCH_DELETE):
# a request stays short; the answer says when more remain, and clearing again takes the next ones.
MEMBER_CAP = 1000
BATCH_DELETE = 100  # BatchDeleteMemoryRecords takes 1-100 records


# AgentCore's memory record ids (MemoryRecordId in the service model: 40-50 characters).
AGENTCORE_RECORD_ID = re.compile(r"\Amem-[a-zA-Z0-9_-]{36,46}\Z")


class StoreUnavailable(Exception):
    """The store could not be reached or refused; the caller answers without memory.

    `reason` says why in a few words fit for a person (no request ids, no secrets);
    `transient` whether trying again later may help (else the set-up must be fixed)."""

    def __init__(self, message: str, reason: str = "it could not be reached", *, transient: bool = True):
        super().__init__(message)
        self.reason = reason
        self.transient = transient

    @property
    def advice(self) -> str:
        from tenants import aws

        return aws.advice(self.transient)


def _unavailable(what: str, exc: Exception) -> StoreUnavailable:
    from tenants import aws

    failed = aws.failure(exc)
    return StoreUnavailable(f"AgentCore Memory refused the {what}: {exc}", failed.reason, transient=failed.transient)


def _not_found(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException"


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

    id: str  # the store's record id (AgentCore's memoryRecordId)
    content: str
    namespace: Namespace
    created_at: datetime | None


@dataclass(frozen=True)
class Listing:
    """What the Memory page lists: the records, newest first, and whether AgentCore holds more
    of a kind than LIST_CAP (those are not listed)."""

    memories: list[ListedMemory]
    truncated: bool


@dataclass(frozen=True)
class Cleared:
    """What clearing a member's records did: `deleted`; `failed`, the records AgentCore did
    not delete (`failure`: why, for a person); `more`, whether records beyond the cap remain."""

    deleted: int
    failed: int = 0
    more: bool = False
    failure: str = ""


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _words(text: str) -> set[str]:
    from agents.knowledge.retrieval import query_terms

    return {_stem(w) for w in query_terms(text)}


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
                raise _unavailable("recall", exc) from exc
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

    def _walk(self, query: dict, keep: Callable[[dict], T | None], cap: int) -> tuple[list[T], bool]:
        """ListMemoryRecords pages of `query`, following nextToken: what `keep` makes of each
        summary (None: skipped), at most `cap`, and whether more remain."""
        from botocore.exceptions import BotoCoreError, ClientError

        found: list[T] = []
        token = None
        while True:
            page = {"nextToken": token} if token else {}
            try:
                answer = self.client.list_memory_records(
                    memoryId=self.memory_id, maxResults=LIST_LIMIT, **query, **page
                )
            except (BotoCoreError, ClientError) as exc:
                raise _unavailable("listing", exc) from exc
            for summary in answer.get("memoryRecordSummaries", []):
                kept = keep(summary)
                if kept is not None:
                    found.append(kept)
            token = answer.get("nextToken")
            if not token or len(found) >= cap:
                return found[:cap], bool(token) or len(found) > cap

    def list(self, *, tenant_id: int, user_id: int) -> Listing:
        """What the Memory page shows member `user_id`: their records (every namespace under
        /tenant/<t>/user/<u>) and the tenant's shared ones, newest first, at most LIST_CAP of each."""
        from agents.memory.policy import can_read, parse

        def readable(summary: dict) -> ListedMemory | None:
            spaces = [parse(path) for path in summary.get("namespaces", [])]
            theirs = [n for n in spaces if n and can_read(n, tenant_id=tenant_id, user_id=user_id)]
            text = (summary.get("content") or {}).get("text", "")
            if not theirs or not text:
                return None  # a namespace the member may not read is never shown
            created = summary.get("createdAt")
            return ListedMemory(
                id=summary["memoryRecordId"],
                content=text[:MAX_CONTENT_CHARS],
                namespace=theirs[0],
                created_at=created if isinstance(created, datetime) else None,
            )

        listed: list[ListedMemory] = []
        truncated = False
        for query in ({"namespacePath": Namespace(tenant_id, user_id).path}, {"namespace": Namespace(tenant_id).path}):
            found, more = self._walk(query, readable, LIST_CAP)
            listed.extend(found)
            truncated = truncated or more
        listed.sort(key=lambda m: m.created_at or datetime.min.replace(tzinfo=UTC), reverse=True)
        return Listing(listed, truncated)

    def _member_records(self, *, tenant_id: int, user_id: int, cap: int) -> tuple[list[tuple[str, Namespace]], bool]:
        """The records (id, namespace) of member `user_id` (every namespace of the record is
        one of theirs), following nextToken; at most `cap`, and whether more remain."""
        from agents.memory.policy import parse

        def theirs(space: Namespace | None) -> bool:
            return space is not None and space.tenant_id == tenant_id and space.user_id == user_id

        def alone(summary: dict) -> tuple[str, Namespace] | None:
            spaces = [parse(p) for p in summary.get("namespaces", [])]
            # A record that is also in a namespace not the member's (the shared one, a
            # colleague's) is not theirs to count or clear.
            if spaces and all(theirs(space) for space in spaces):
                return summary["memoryRecordId"], spaces[0]
            return None

        return self._walk({"namespacePath": Namespace(tenant_id, user_id).path}, alone, cap)

    def count_member(self, *, tenant_id: int, user_id: int, cap: int | None = None) -> tuple[int, bool]:
        """How many records member `user_id` has (at most `cap`, MEMBER_CAP), and whether there are more."""
        found, more = self._member_records(tenant_id=tenant_id, user_id=user_id, cap=cap or MEMBER_CAP)
        return len(found), more

    def clear_member(self, *, tenant_id: int, user_id: int, cap: int | None = None) -> Cleared:
        """Delete member `user_id`'s records (at most `cap`, MEMBER_CAP, in one go)."""
        from botocore.exceptions import BotoCoreError, ClientError

        found, more = self._member_records(tenant_id=tenant_id, user_id=user_id, cap=cap or MEMBER_CAP)
        deleted, failed, failure = 0, 0, ""
        for start in range(0, len(found), BATCH_DELETE):
            batch = found[start : start + BATCH_DELETE]
            try:
                answer = self.client.batch_delete_memory_records(
                    memoryId=self.memory_id,
                    # The namespace also lets an IAM policy (condition key) confine the portal's role.
                    records=[{"memoryRecordId": rid, "namespace": space.path} for rid, space in batch],
                )
            except (BotoCoreError, ClientError) as exc:
                if not deleted:
                    raise _unavailable("deletion", exc) from exc
                # What was deleted before stays deleted: say so rather than fail the whole request.
                log.warning("AgentCore Memory stopped clearing after %s records: %s", deleted, exc)
                return Cleared(deleted, len(found) - deleted - failed, more, _unavailable("deletion", exc).reason)
            deleted += sum(1 for r in answer.get("successfulRecords", []) if r.get("status") == "SUCCEEDED")
            failures = answer.get("failedRecords") or []
            failed += len(failures)
            if failures and not failure:
                failure = f"AWS answered: {failures[0].get('errorMessage') or 'not deleted'}"
        return Cleared(deleted, failed, more, failure)

    def create(self, namespace: Namespace, content: str) -> str:
        """Keep `content` as one record in `namespace` (its only namespace); the record's id."""
        from botocore.exceptions import BotoCoreError, ClientError

        request = f"portal-{uuid.uuid4().hex}"
        try:
            answer = self.client.batch_create_memory_records(
                memoryId=self.memory_id,
                records=[
                    {
                        "requestIdentifier": request,
                        "namespaces": [namespace.path],
                        "content": {"text": content[:MAX_CONTENT_CHARS]},
                        "timestamp": datetime.now(UTC),
                    }
                ],
                clientToken=str(uuid.uuid4()),
            )
        except (BotoCoreError, ClientError) as exc:
            raise _unavailable("new record", exc) from exc
        created = [r for r in answer.get("successfulRecords", []) if r.get("status") == "SUCCEEDED"]
        if len(created) != 1:
            failed = (answer.get("failedRecords") or [{}])[0]
            message = failed.get("errorMessage") or "no record was created"
            status = failed.get("errorCode") or 0
            raise StoreUnavailable(
                f"AgentCore Memory did not create the record: {message}",
                f"AWS answered: {message}",
                transient=status == 429 or status >= 500,
            )
        return created[0]["memoryRecordId"]

    def remember(self, namespace: Namespace, content: str, writer: Writer) -> Memory:
        record_id = self.create(namespace, content)
        return Memory(
            id=f"agentcore-{record_id}",
            content=content[:MAX_CONTENT_CHARS],
            namespace=namespace.path,
            created_at=datetime.now(UTC).isoformat(),
        )

    def delete(self, record_id: str, may_delete: Callable[[Namespace], bool]) -> Namespace | None:
        """Delete record `record_id` if every namespace it is in passes `may_delete`: its
        namespace, or None when there is no such record here or it may not be deleted.

        The record is read first (in this tenant's memory only), so that a record id
        someone typed never deletes a record of a namespace they may not write."""
        from botocore.exceptions import BotoCoreError, ClientError

        from agents.memory.policy import parse

        if not AGENTCORE_RECORD_ID.match(record_id or ""):
            return None
        try:
            answer = self.client.get_memory_record(memoryId=self.memory_id, memoryRecordId=record_id)
        except (BotoCoreError, ClientError) as exc:
            if _not_found(exc):
                return None
            raise _unavailable("lookup", exc) from exc
        spaces = [parse(path) for path in (answer.get("memoryRecord") or {}).get("namespaces", [])]
        if not spaces or not all(space is not None and may_delete(space) for space in spaces):
            return None
        namespace = spaces[0]
        try:
            # The namespace also lets an IAM policy (condition key) confine the portal's role.
            self.client.delete_memory_record(
                memoryId=self.memory_id, memoryRecordId=record_id, namespace=namespace.path
            )
        except (BotoCoreError, ClientError) as exc:
            if _not_found(exc):
                return None
            raise _unavailable("deletion", exc) from exc
        return namespace


def store_for(tenant):
    """`agentcore` for a silo tenant with a bound memory id, else `local` — also for that
    tenant on embedded defaults (AGENT_RUNTIME=local), where AWS bindings do not apply and
    no client is made (ResourceBindings.dedicated_memory)."""
    from django.conf import settings

    memory_id = tenant.bindings.dedicated_memory(settings.AGENT_RUNTIME)
    if memory_id:
        from tenants import aws

        # The tenant's role signs when it has one (tenants.aws); make_client is the default chain.
        session = aws.session_for(tenant)
        client = session.client("bedrock-agentcore") if session else make_client(tenant.region)
        return AgentCoreStore(memory_id, client)
    return LocalStore()

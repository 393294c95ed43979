"""How the reference agent recalls and keeps long-term memory: through the portal's gateway.

Like knowledge retrieval (agents/runtime/knowledge.py, architecture §5.3) the runtime
never reads the portal's database: it calls the portal with the turn's act-on-behalf
token (aud ``agent-runtime``; scopes ``memory:read`` / ``memory:write``, which the
portal puts in the token only when the tenant's plan has ``memory``):

* :class:`HttpMemoryGateway` POSTs to ``<PORTAL_GATEWAY_URL>/api/v1/gateway/memory/recall``
  and ``…/remember`` (runtimes outside the portal);
* the in-process ``local`` runtime gets ``agents.memory.gateway.InProcessMemoryGateway``,
  which hands the same token to the same service functions.

The portal decides whose memories these are (the token's member) and which
namespaces a recall reaches (agents/memory/policy.py); the runtime only names the
agent.

When the agent remembers (`durable_facts`, a deterministic rule so that the
offline model and the tests behave the same everywhere): each sentence of the
user's prompt that is not a question and

* starts with "remember (that) …" → the rest of the sentence is kept;
* contains "my name is …", or "I prefer …" → the sentence is kept as said;

at most MAX_FACTS per turn. Nothing else is stored: the agent does not mine the
conversation for facts.

A gateway failure never fails the turn: the agent answers without memories, or
does not keep the fact, and the reason is logged.

Nothing here imports Django.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Protocol

from agents.runtime import gateway_http as http
from agents.runtime.auth import Caller

logger = logging.getLogger(__name__)

RECALL_PATH = "/api/v1/gateway/memory/recall"
REMEMBER_PATH = "/api/v1/gateway/memory/remember"
DEFAULT_K = 5
MAX_MEMORIES = 10
MAX_MEMORY_CHARS = 1000
MAX_FACTS = 3
MAX_RESPONSE_BYTES = 1024 * 1024
FEATURE = "memory"
READ_SCOPE = "memory:read"
WRITE_SCOPE = "memory:write"

_SENTENCE_RE = re.compile(r"(?<=[.!?])\s+|\n+")
_REMEMBER_RE = re.compile(r"\A(?:please\s+)?remember(?:\s+that)?[\s,:]+(?P<fact>\S.*)\Z", re.IGNORECASE)
_STATEMENT_RE = re.compile(r"\bmy name is\s+\S|\bI prefer\s+\S", re.IGNORECASE)


class MemoryUnavailable(Exception):
    pass


@dataclass(frozen=True)
class RecalledMemory:
    id: str
    content: str

    @classmethod
    def from_dict(cls, data) -> RecalledMemory:
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("id"), str)
            or not isinstance(data.get("content"), str)
        ):
            raise MemoryUnavailable("the gateway sent a memory without id and content")
        return cls(id=data["id"][:200], content=data["content"][:MAX_MEMORY_CHARS])


class MemoryGateway(Protocol):
    def recall(self, caller: Caller, query: str, *, agent_id: str, k: int = DEFAULT_K) -> list[RecalledMemory]:
        """The acting member's memories matching `query`. May raise MemoryUnavailable."""

    def remember(self, caller: Caller, content: str, *, agent_id: str) -> None:
        """Keep one fact for the acting member. May raise MemoryUnavailable."""


def wants_recall(caller: Caller) -> bool:
    return FEATURE in caller.tenant.entitlements and READ_SCOPE in caller.scopes and bool(caller.token)


def wants_remember(caller: Caller) -> bool:
    return FEATURE in caller.tenant.entitlements and WRITE_SCOPE in caller.scopes and bool(caller.token)


def durable_facts(prompt: str) -> list[str]:
    """The facts of `prompt` worth keeping, by the rule in the module docstring."""
    facts: list[str] = []
    for sentence in _SENTENCE_RE.split(prompt.strip()):
        sentence = " ".join(sentence.split())
        if not sentence or sentence.endswith("?"):
            continue
        match = _REMEMBER_RE.match(sentence)
        fact = match.group("fact") if match else (sentence if _STATEMENT_RE.search(sentence) else "")
        fact = fact[:MAX_MEMORY_CHARS].strip()
        if fact and fact not in facts:
            facts.append(fact)
        if len(facts) == MAX_FACTS:
            break
    return facts


def memories_from_document(document) -> list[RecalledMemory]:
    if not isinstance(document, dict) or not isinstance(document.get("memories"), list):
        raise MemoryUnavailable("the gateway's answer has no memory list")
    return [RecalledMemory.from_dict(item) for item in document["memories"][:MAX_MEMORIES]]


class HttpMemoryGateway:
    def __init__(self, base_url: str, *, timeout: float = 10.0):
        self.base_url = http.check_url(base_url)
        self.timeout = timeout

    def _post(self, caller: Caller, path: str, body: dict):
        body = {**body, "tenant_id": caller.tenant.tenant_id}
        try:
            return http.post_json(
                self.base_url + path, caller.token, body, timeout=self.timeout, max_bytes=MAX_RESPONSE_BYTES
            )
        except http.GatewayHTTPError as exc:
            raise MemoryUnavailable(f"the portal refused the memory call ({exc.status})") from exc
        except http.GatewayUnreachable as exc:
            raise MemoryUnavailable(f"the portal's memory gateway is unreachable: {exc}") from exc

    def recall(self, caller: Caller, query: str, *, agent_id: str, k: int = DEFAULT_K) -> list[RecalledMemory]:
        document = self._post(caller, RECALL_PATH, {"query": query[:2000], "k": k, "agent": agent_id})
        return memories_from_document(document)

    def remember(self, caller: Caller, content: str, *, agent_id: str) -> None:
        self._post(caller, REMEMBER_PATH, {"content": content[:MAX_MEMORY_CHARS], "agent": agent_id})

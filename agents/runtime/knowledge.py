"""How the reference agent retrieves knowledge: through the portal's gateway, never its database.

Architecture §5.3: the runtime sees the tenant only through its headers and the
act-on-behalf token, so retrieval is a call to the portal with that very token
(aud ``agent-runtime``, scope ``kb:read``); the portal validates it, takes the
tenant from it and searches that tenant's chunks only.

* :class:`HttpKnowledgeGateway` POSTs to ``<PORTAL_GATEWAY_URL>/api/v1/gateway/knowledge/retrieve``
  (the ``http`` and ``agentcore`` runtimes, which run outside the portal);
* the in-process ``local`` runtime gets a gateway object from the portal
  (``agents.knowledge.gateway.InProcessKnowledgeGateway``) that calls the same
  token validation and service function as the HTTP endpoint, without a loopback
  HTTP request from a Celery worker to the web tier (which may not even run in
  tests and the embedded default).

A gateway failure never fails the turn: the agent answers without passages,
the reason is logged, and the answer ends with a note saying so. When the
gateway could search only some of the agent's bases (one backend failed), it
names the others in ``unsearched`` and the answer's note names them.

Nothing here imports Django.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Protocol

from agents.runtime import gateway_http as http
from agents.runtime.auth import Caller
from agents.runtime.contract import MAX_PASSAGES, ContractError, Passage

logger = logging.getLogger(__name__)

RETRIEVE_PATH = "/api/v1/gateway/knowledge/retrieve"
DEFAULT_K = 5
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
FEATURE = "knowledge_bases"
SCOPE = "kb:read"


# How many unsearched base names, and how much of each, a runtime takes from a gateway answer.
MAX_UNSEARCHED = 20
MAX_NAME_CHARS = 200


class KnowledgeUnavailable(Exception):
    pass


@dataclass(frozen=True)
class Retrieval:
    """The passages of one retrieval, and the names of the agent's bases the gateway could not
    search (one backend failed while others answered); empty when every base was searched."""

    passages: tuple[Passage, ...]
    unsearched: tuple[str, ...] = ()


class KnowledgeGateway(Protocol):
    def retrieve(self, caller: Caller, query: str, *, agent_id: str, k: int = DEFAULT_K) -> Retrieval:
        """Passages for `query`, as the portal ranks them for the caller's tenant, and the bases
        it could not search. May raise KnowledgeUnavailable."""


def wants_knowledge(caller: Caller) -> bool:
    """Retrieve only when the tenant is entitled and the token allows it (saves a round trip otherwise)."""
    return FEATURE in caller.tenant.entitlements and SCOPE in caller.scopes and bool(caller.token)


def retrieval_from_document(document) -> Retrieval:
    """The gateway's answer, ``{"passages": [...], "unsearched": [names]}``, as a Retrieval."""
    if not isinstance(document, dict) or not isinstance(document.get("passages"), list):
        raise KnowledgeUnavailable("the gateway's answer has no passage list")
    try:
        passages = tuple(Passage.from_dict(item) for item in document["passages"][:MAX_PASSAGES])
    except ContractError as exc:
        raise KnowledgeUnavailable(f"the gateway sent a bad passage: {exc}") from exc
    unsearched = document.get("unsearched") or []
    if not isinstance(unsearched, list) or not all(isinstance(name, str) for name in unsearched):
        raise KnowledgeUnavailable("the gateway sent a bad list of unsearched bases")
    names = tuple(name.strip()[:MAX_NAME_CHARS] for name in unsearched[:MAX_UNSEARCHED] if name.strip())
    return Retrieval(passages=passages, unsearched=names)


class HttpKnowledgeGateway:
    def __init__(self, base_url: str, *, timeout: float = 10.0):
        self.url = http.check_url(base_url) + RETRIEVE_PATH
        self.timeout = timeout

    def retrieve(self, caller: Caller, query: str, *, agent_id: str, k: int = DEFAULT_K) -> Retrieval:
        body = {"query": query[:2000], "k": k, "agent": agent_id, "tenant_id": caller.tenant.tenant_id}
        try:
            document = http.post_json(self.url, caller.token, body, timeout=self.timeout, max_bytes=MAX_RESPONSE_BYTES)
        except http.GatewayHTTPError as exc:
            raise KnowledgeUnavailable(f"the portal refused retrieval ({exc.status})") from exc
        except http.GatewayUnreachable as exc:
            raise KnowledgeUnavailable(f"the portal's knowledge gateway is unreachable: {exc}") from exc
        return retrieval_from_document(document)


_MARKDOWN_PUNCTUATION = re.compile(r"([\\`*_{}\[\]()#+!<>|~])")


def _as_words(name: str) -> str:
    """A base's name (its tenant's text) as Markdown that shows it, never formats or links it."""
    return "“" + _MARKDOWN_PUNCTUATION.sub(r"\\\1", " ".join(name.split())) + "”"


def missing_knowledge_note(unsearched: tuple[str, ...] | None) -> str:
    """The note an answer ends with when it could not draw on knowledge it should have:
    `unsearched` names the bases the gateway could not search; None means none could be."""
    tail = "could not be searched just now, so this answer does not draw on"
    if unsearched is None:
        return f"_The knowledge bases {tail} them._"
    names = [_as_words(name) for name in unsearched]
    if len(names) == 1:
        return f"_The knowledge base {names[0]} {tail} it._"
    listed = ", ".join(names[:-1]) + " and " + names[-1]
    return f"_The knowledge bases {listed} {tail} them._"

"""Retrieval as the reference agent sees it: the gateway's answer read into a Retrieval, and
the note an answer ends with when some of the agent's knowledge bases could not be searched."""

from __future__ import annotations

import pytest

from agents.runtime.agent import ReferenceAgent
from agents.runtime.auth import Caller
from agents.runtime.knowledge import KnowledgeUnavailable, Retrieval, retrieval_from_document
from tests.runtime import helpers

CALLER = Caller(
    tenant=helpers.tenant(entitlements=("chat", "knowledge_bases")),
    subject="user:17",
    actors=(helpers.AGENT_SUBJECT,),
    scopes=frozenset({"kb:read"}),
    token="act-on-behalf",
)
PASSAGE = helpers.PASSAGES[0]


class AnsweringGateway:
    def __init__(self, retrieval: Retrieval):
        self.retrieval = retrieval

    def retrieve(self, caller, query, *, agent_id, k=5) -> Retrieval:
        return self.retrieval


def test_it_reads_the_passages_and_the_unsearched_bases_of_the_gateways_answer():
    document = {"passages": [PASSAGE.to_dict()], "unsearched": [" Policies ", "", "Handbook"]}
    assert retrieval_from_document(document) == Retrieval(passages=(PASSAGE,), unsearched=("Policies", "Handbook"))


def test_an_answer_without_unsearched_bases_misses_none():
    assert retrieval_from_document({"passages": []}) == Retrieval(passages=(), unsearched=())


def test_it_refuses_an_unsearched_list_of_the_wrong_shape():
    with pytest.raises(KnowledgeUnavailable, match="unsearched"):
        retrieval_from_document({"passages": [], "unsearched": "Policies"})


def test_it_notes_the_bases_the_gateway_could_not_search():
    agent = ReferenceAgent(knowledge=AnsweringGateway(Retrieval(passages=(PASSAGE,), unsearched=("Policies",))))
    request, note = agent.retrieve(helpers.request(passages=()), CALLER)
    assert request.passages == (PASSAGE,)
    assert note == "_The knowledge base “Policies” could not be searched just now, so this answer does not draw on it._"


def test_it_adds_no_note_when_every_base_was_searched():
    agent = ReferenceAgent(knowledge=AnsweringGateway(Retrieval(passages=(PASSAGE,))))
    request, note = agent.retrieve(helpers.request(passages=()), CALLER)
    assert request.passages == (PASSAGE,)
    assert note == ""

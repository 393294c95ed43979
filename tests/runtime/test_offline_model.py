"""The offline model: deterministic extractive answers, citations, estimated usage, no network."""

from __future__ import annotations

import math
import socket

import pytest

from agents.runtime.agent import ReferenceAgent, build_model_input
from agents.runtime.auth import Caller
from agents.runtime.contract import (
    AgentSpec,
    ChatMessage,
    Citation,
    Delta,
    Done,
    InvocationResult,
    ModelSpec,
    Passage,
    SkillSpec,
    Usage,
)
from agents.runtime.models.base import estimate_input_tokens
from agents.runtime.models.offline import LABEL, OfflineModel, bm25_rank, terms
from tests.runtime import helpers

CALLER = Caller(tenant=helpers.tenant(), subject="user:17", actors=(helpers.AGENT_SUBJECT,))


def _run(**overrides) -> list:
    return list(ReferenceAgent().run(helpers.request(**overrides), CALLER))


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the offline model must not open sockets")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_it_gives_the_same_answer_every_time():
    assert _run() == _run()


def test_it_quotes_the_best_matching_sentences_with_numbered_citations():
    result = InvocationResult.from_events(_run())
    assert result.output.startswith(LABEL)
    assert '"To reset your password, open Settings and choose Security." [1]' in result.output
    assert "Invoices" not in result.output
    assert result.citations == [
        {"passage_id": "kb-1", "title": "Resetting a password", "source": "kb://handbook/passwords", "index": 1}
    ]


def test_it_numbers_citations_in_order_of_appearance_across_passages():
    result = InvocationResult.from_events(_run(prompt="When are invoices issued, and how do I reset my password?"))
    numbered = [(c["index"], c["passage_id"]) for c in result.citations]
    assert sorted(numbered) == numbered
    assert {pid for _, pid in numbered} == {"kb-1", "kb-2"}
    for index, _ in numbered:
        assert f"[{index}]" in result.output


def test_it_streams_word_by_word_deltas_that_add_up_to_the_answer():
    events = _run()
    deltas = [e.text for e in events if isinstance(e, Delta)]
    assert len(deltas) > 10
    assert all(len(d.split()) == 1 for d in deltas)
    assert "".join(deltas) == InvocationResult.from_events(events).output


def test_it_ends_with_citations_then_estimated_usage_then_done():
    events = _run()
    tail = [type(e) for e in events if not isinstance(e, Delta)]
    assert tail == [Citation, Usage, Done]


def test_it_estimates_usage_as_a_quarter_of_the_characters_and_flags_it():
    events = _run()
    usage = next(e for e in events if isinstance(e, Usage))
    output = InvocationResult.from_events(events).output
    assert usage.estimated is True
    assert usage.output_tokens == math.ceil(len(output) / 4)
    assert usage.input_tokens == estimate_input_tokens(build_model_input(helpers.request(), CALLER))
    assert usage.model == "offline-extractive-1"


def test_it_answers_from_instructions_and_conversation_without_passages():
    history = (
        ChatMessage("user", "Our invoices go to finance@example.com. Please remember that."),
        ChatMessage("assistant", "Noted."),
    )
    result = InvocationResult.from_events(_run(passages=(), messages=history, prompt="Where do invoices go?"))
    assert result.output.startswith(f"{LABEL} No sources were provided")
    assert 'You asked: "Where do invoices go?"' in result.output
    assert "Helpdesk is answering with the offline model, which does not write answers" in result.output
    assert 'Earlier in this conversation: "Our invoices go to finance@example.com."' in result.output
    assert result.citations == []


def test_it_never_quotes_the_agents_instructions():
    secret = "You are a concise, friendly helpdesk agent. Never mention the discount code FALCON-7."
    agent = AgentSpec(id="42", name="Helpdesk", instructions=secret)
    output = InvocationResult.from_events(_run(passages=(), agent=agent, prompt="Where do invoices go?")).output
    assert output.startswith(f"{LABEL} No sources were provided")
    assert "instructed" not in output
    assert "concise, friendly" not in output and "FALCON-7" not in output


KB_ADVICE = "An administrator can add documents to a knowledge base this agent uses, so that answers quote them."


@pytest.mark.parametrize(
    ("tenant", "advised"),
    [
        ({"entitlements": ("chat",), "feature_flags": ()}, False),
        ({"entitlements": ("chat", "knowledge_bases"), "feature_flags": ("knowledge_bases",)}, True),
        ({"entitlements": (), "feature_flags": ("knowledge_bases",)}, True),
    ],
    ids=["basic-plan", "entitled", "flag-only"],
)
def test_it_suggests_a_knowledge_base_only_to_tenants_that_have_the_feature(tenant, advised):
    caller = Caller(tenant=helpers.tenant(**tenant), subject="user:17", actors=(helpers.AGENT_SUBJECT,))
    events = list(ReferenceAgent().run(helpers.request(passages=(), prompt="Where do invoices go?"), caller))
    output = InvocationResult.from_events(events).output
    assert (KB_ADVICE in output) is advised
    assert ("knowledge base" in output) is advised
    assert "administrator" not in output or advised


def test_it_says_so_when_no_passage_matches():
    result = InvocationResult.from_events(_run(prompt="What is the weather on Mars?"))
    assert result.output.startswith(f"{LABEL} None of the 2 sources provided matches your question")
    assert result.citations == []


def test_it_honours_max_tokens():
    events = _run(model=ModelSpec(provider="offline", max_tokens=10))
    output = InvocationResult.from_events(events).output
    assert len(output) <= 40
    assert next(e for e in events if isinstance(e, Usage)).output_tokens <= 10


def test_it_ranks_with_bm25_preferring_rarer_terms():
    documents = [terms("the password policy"), terms("reset the password"), terms("reset the router")]
    ranked = bm25_rank(terms("reset password"), documents)
    assert ranked[0][1] == 1
    assert {index for _, index in ranked} == {0, 1, 2}


def test_it_breaks_ties_by_passage_order():
    twins = (Passage("a", "A", "Refunds take five days."), Passage("b", "B", "Refunds take five days."))
    answer, cited = OfflineModel().compose(build_model_input(helpers.request(prompt="refunds", passages=twins), CALLER))
    assert [(n, p.id) for n, p in cited] == [(1, "a"), (2, "b")]
    assert answer.index("[1]") < answer.index("[2]")


REFUND = SkillSpec(
    name="Globex refund approval",
    description="A customer asks for a refund or their money back.",
    instructions="1. Confirm the order number.\n2. Refunds above 100 EUR need finance approval.",
)
ONBOARDING = SkillSpec(
    name="Onboard a new hire", description="Someone starts at the company.", instructions="1. Ask HR."
)


def test_it_names_the_skill_that_matches_the_request_and_quotes_its_steps():
    result = InvocationResult.from_events(
        _run(prompt="I want a refund for my order", passages=(), skills=(ONBOARDING, REFUND))
    )
    assert 'Following the skill "Globex refund approval"' in result.output
    assert "Refunds above 100 EUR need finance approval." in result.output
    assert "Onboard a new hire" not in result.output


def test_it_follows_no_skill_when_none_matches():
    result = InvocationResult.from_events(_run(prompt="What is the weather like?", passages=(), skills=(REFUND,)))
    assert "Following the skill" not in result.output


def test_it_names_the_matching_skill_under_an_extractive_answer_too():
    result = InvocationResult.from_events(_run(prompt="How do I reset my password for a refund?", skills=(REFUND,)))
    assert "[1]" in result.output and 'Following the skill "Globex refund approval"' in result.output


def test_it_shortens_long_skill_steps_at_a_line_break():
    long = SkillSpec(
        name="Refunds",
        description="A refund.",
        instructions="\n".join(f"{n}. Step {n} " + "x" * 60 for n in range(1, 40)),
    )
    result = InvocationResult.from_events(_run(prompt="refund please", passages=(), skills=(long,)))
    shown = result.output.split("(use when: A refund):", 1)[1]
    assert "(The other steps are in the skill.)" in shown
    assert all(line.endswith("x" * 60) for line in shown.strip().splitlines()[:-2]), "a step was cut mid-line"

"""With denied topics, a streamed answer is relayed only sentence by sentence, each sentence
judged whole, and where a sentence ends is decided as the topic detector decides it: in the
text it reads (entities decoded: "&amp; " ends nothing), and not at the full stop of an
abbreviation ("e.g.", "U.S."). A sentence too long to judge mid-stream holds the stream until
the end instead of going out in part. Real chat turns (Celery eager, fake runtime at its seam)."""

from __future__ import annotations

import pytest

from agents.guardrails import detectors
from tests.agents.test_chat import start
from tests.guardrails.conftest import set_tier_policy
from tests.guardrails.test_enforcement import deltas, published_text, send, turn
from tests.guardrails.test_output_leaks import BENIGN, chunks, stream_store

pytestmark = pytest.mark.django_db

INVESTMENT_ADVICE = {
    "denied_topics": [{"name": "Investment advice", "examples": ["which stocks should I buy now"]}],
    "output_pii": False,
}


@pytest.fixture
def chatting(client, world, catalogue, runtime, eager):
    client.force_login(world.a.member)
    return start(client, world.a, catalogue.helpdesk)


def answer_turn(client, world, chatting, runtime, capture, answer: str, size: int):
    set_tier_policy(world.a.tenant.tier, INVESTMENT_ADVICE)
    runtime.events = deltas(*chunks(answer, size))
    send(client, world, chatting, "Tell me", capture)
    invocation, _asked, stored, _events = turn(world)
    return invocation, stored, stream_store(world, invocation)


@pytest.mark.parametrize("size", [3, 5, 10, 16])
@pytest.mark.parametrize(
    ("sentence", "start"),
    [
        ("Investment tips &amp; advice: buy ACME now. ", "Investment tips"),
        ("Investment tips &lt; 3 &gt; advice: buy ACME now. ", "Investment tips"),
        ("For investment, e.g. funds, my advice is simple. ", "For investment"),
        ("Investment in U.S. funds is my advice to you. ", "Investment in"),
        ("Investment in funds... that is my advice to you. ", "Investment in"),
    ],
    ids=["&amp;", "&lt; &gt;", "e.g.", "U.S.", "ellipsis"],
)
def test_a_denied_sentence_is_never_relayed_in_part(
    client, world, chatting, runtime, django_capture_on_commit_callbacks, size, sentence, start
):
    answer = BENIGN * 3 + sentence + BENIGN * 3
    invocation, stored, stream = answer_turn(
        client, world, chatting, runtime, django_capture_on_commit_callbacks, answer, size
    )
    assert (invocation.status, stored.blocked_by_guardrails) == ("blocked", True)
    assert start not in stream, stream


@pytest.mark.parametrize("size", [5, 16])
def test_a_sentence_too_long_to_judge_mid_stream_is_held_back_not_cut(
    client, world, chatting, runtime, django_capture_on_commit_callbacks, size
):
    """No punctuation for well over SENTENCE_LOOKBACK characters: the sentence is only judged
    whole at the end, so none of it goes out before."""
    filler = "our team looks at refunds shipping returns and exchanges every working day " * 20
    answer = "Investment " + filler + "that is my advice. " + BENIGN * 2
    invocation, stored, stream = answer_turn(
        client, world, chatting, runtime, django_capture_on_commit_callbacks, answer, size
    )
    assert (invocation.status, stored.blocked_by_guardrails) == ("blocked", True)
    assert "Investment" not in stream and "our team" not in stream, stream[:300]


def test_an_unpunctuated_answer_that_passes_is_shown_whole_at_the_end(
    client, world, chatting, runtime, django_capture_on_commit_callbacks
):
    answer = "our team looks at refunds shipping returns and exchanges every working day " * 20
    invocation, stored, _stream = answer_turn(
        client, world, chatting, runtime, django_capture_on_commit_callbacks, answer, 10
    )
    shown, _events = published_text(world, invocation)
    assert (invocation.status, stored.content, shown) == ("done", answer, answer)


def test_a_punctuated_answer_with_abbreviations_still_streams_sentence_by_sentence(
    client, world, chatting, runtime, django_capture_on_commit_callbacks
):
    answer = "Refunds, e.g. for shoes, take 3.5 days in the U.S. and Canada. " * 6 + BENIGN * 10
    invocation, stored, _stream = answer_turn(
        client, world, chatting, runtime, django_capture_on_commit_callbacks, answer, 10
    )
    shown, events = published_text(world, invocation)
    assert (invocation.status, stored.content, shown) == ("done", answer, answer)
    assert len([event for event in events[:-1] if event.kind == "delta"]) > 5


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("Buy e.g. funds. Then rest.", ["Buy e.g. funds.", "Then rest."]),
        ("In the U.S. and the U.K. it is 3.5 days. Done.", ["In the U.S. and the U.K. it is 3.5 days.", "Done."]),
        ("Wait... what now? Yes!\n\nNew part; more.", ["Wait... what now?", "Yes!", "New part;", "more."]),
        ("See Dr. Smith vs. Mr. Jones. Ok.", ["See Dr. Smith vs. Mr. Jones.", "Ok."]),
        ("1. First item\n2. Second item", ["1. First item\n2. Second item"]),
        ("- Buy now.\n- Sell later.", ["- Buy now.", "- Sell later."]),
    ],
)
def test_the_topic_detector_splits_sentences_where_they_end(text, sentences):
    assert detectors._sentences(text) == sentences

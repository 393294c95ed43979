"""While an answer streams, nothing of a value the output policy redacts or blocks reaches the
browser or the stream store before the whole value can be checked, however many raw characters
it is written with (HTML entities, Markdown escapes: the detectors read the decoded text).
Real chat turns (Celery eager, fake runtime at its seam)."""

from __future__ import annotations

import pytest

from tests.agents.test_chat import start
from tests.guardrails.conftest import set_tier_policy
from tests.guardrails.test_enforcement import deltas, published_text, send, turn
from tests.guardrails.test_output_leaks import BENIGN, chunks, stream_store

pytestmark = pytest.mark.django_db


@pytest.fixture
def chatting(client, world, catalogue, runtime, eager):
    client.force_login(world.a.member)
    return start(client, world.a, catalogue.helpdesk)


CARD = "4111 1111 1111 1111"


def decimal_entities(text: str) -> str:
    """`text` as HTML decimal entities, one a character ("4" is "&#52;"), as a browser shows it."""
    return "".join(f"&#{ord(char)};" for char in text)


def hex_entities(text: str) -> str:
    return "".join(f"&#x{ord(char):x};" for char in text)


def escaped_email(text: str) -> str:
    """Every ASCII punctuation mark of `text` as a Markdown backslash escape ("\\." shows ".")."""
    return "".join(f"\\{char}" if not char.isalnum() else char for char in text)


def card_fragments(card: str = CARD) -> list[str]:
    """Every raw and decoded run of the card's first digits long enough to say something."""
    digits = card.replace(" ", "")
    heads = [card[:n] for n in range(5, len(card))] + [digits[:n] for n in range(5, len(digits))]
    return heads + [decimal_entities(head) for head in heads] + [hex_entities(head) for head in heads]


@pytest.mark.parametrize("size", [3, 7, 10, 16])
@pytest.mark.parametrize("action", ["redact", "block"])
@pytest.mark.parametrize(
    "written",
    [decimal_entities(CARD), hex_entities(CARD), decimal_entities(CARD.replace(" ", ""))],
    ids=["decimal entities", "hex entities", "unspaced decimal entities"],
)
def test_an_entity_encoded_card_is_never_relayed_in_part(
    client, world, chatting, runtime, django_capture_on_commit_callbacks, size, action, written
):
    set_tier_policy(world.a.tenant.tier, {"entities": {"card": action}, "output_pii": True})
    answer = BENIGN * 3 + "Your card is " + written + " and it is active. " + BENIGN * 3
    runtime.events = deltas(*chunks(answer, size))
    send(client, world, chatting, "My card?", django_capture_on_commit_callbacks)

    invocation, _asked, stored, _events = turn(world)
    assert invocation.status == ("blocked" if action == "block" else "done")
    stream = stream_store(world, invocation)
    leaked = [fragment for fragment in card_fragments() if fragment in stream]
    assert not leaked, leaked[-1]


@pytest.mark.parametrize("size", [3, 10])
def test_a_redacted_entity_encoded_card_streams_as_the_stored_answer_reads(
    client, world, chatting, runtime, django_capture_on_commit_callbacks, size
):
    set_tier_policy(world.a.tenant.tier, {"entities": {"card": "redact"}, "output_pii": True})
    answer = BENIGN * 3 + "Your card is " + decimal_entities(CARD) + " and it is active. " + BENIGN * 3
    runtime.events = deltas(*chunks(answer, size))
    send(client, world, chatting, "My card?", django_capture_on_commit_callbacks)

    _invocation, _asked, stored, _events = turn(world)
    shown, events = published_text(world, _invocation)
    assert shown == stored.content
    assert "Your card is [CARD] and it is active." in stored.content
    assert not any(event.kind == "replace" for event in events)  # only ever grew, redacted


@pytest.mark.parametrize("size", [3, 10])
def test_a_markdown_escaped_email_is_never_relayed_in_part(
    client, world, chatting, runtime, django_capture_on_commit_callbacks, size
):
    set_tier_policy(world.a.tenant.tier, {"entities": {"email": "redact"}, "output_pii": True})
    email = "jane.doe.from.accounts.receivable@billing.example-company.example.com"
    answer = BENIGN * 3 + "Write to " + escaped_email(email) + " today. " + BENIGN * 3
    runtime.events = deltas(*chunks(answer, size))
    send(client, world, chatting, "Who?", django_capture_on_commit_callbacks)

    invocation, _asked, stored, _events = turn(world)
    stream = stream_store(world, invocation)
    assert "jane" not in stream and "receivable" not in stream, stream
    assert "[EMAIL]" in stored.content


@pytest.mark.parametrize("size", [3, 10])
def test_a_plain_card_is_never_relayed_in_part(
    client, world, chatting, runtime, django_capture_on_commit_callbacks, size
):
    set_tier_policy(world.a.tenant.tier, {"entities": {"card": "redact"}, "output_pii": True})
    answer = BENIGN * 3 + "Your card is " + CARD + " and it is active. " + BENIGN * 3
    runtime.events = deltas(*chunks(answer, size))
    send(client, world, chatting, "My card?", django_capture_on_commit_callbacks)

    invocation, _asked, stored, _events = turn(world)
    stream = stream_store(world, invocation)
    leaked = [fragment for fragment in card_fragments() if fragment in stream]
    assert not leaked, leaked[-1]
    assert "[CARD]" in stored.content


@pytest.mark.parametrize(
    "policy",
    [{"entities": {"card": "redact"}, "output_pii": True}, {"entities": {"card": "block"}, "output_pii": True}],
    ids=["redacting", "blocking"],
)
def test_a_plain_long_answer_still_streams_in_several_deltas(
    client, world, chatting, runtime, django_capture_on_commit_callbacks, policy
):
    set_tier_policy(world.a.tenant.tier, policy)
    answer = (BENIGN * 30)[:2000]
    runtime.events = deltas(*chunks(answer, 10))
    send(client, world, chatting, "Tell me", django_capture_on_commit_callbacks)

    invocation, _asked, stored, _events = turn(world)
    shown, events = published_text(world, invocation)
    assert (invocation.status, stored.content, shown) == ("done", answer, answer)
    before_end = [event for event in events[:-1] if event.kind == "delta"]
    assert len(before_end) >= 10


@pytest.mark.parametrize("size", [3, 10])
def test_an_entity_encoded_blocked_term_is_never_relayed_in_part(
    client, world, chatting, runtime, django_capture_on_commit_callbacks, size
):
    """Without PII redaction the deltas go out as the check clears them: the hold-back there
    is counted in read characters too."""
    set_tier_policy(world.a.tenant.tier, {"blocked_terms": ["nightingale expansion"], "output_pii": False})
    answer = BENIGN * 3 + "The plan: " + decimal_entities("Nightingale Expansion") + " starts soon. " + BENIGN * 3
    runtime.events = deltas(*chunks(answer, size))
    send(client, world, chatting, "Plans?", django_capture_on_commit_callbacks)

    invocation, _asked, _stored, _events = turn(world)
    assert invocation.status == "blocked"
    stream = stream_store(world, invocation)
    assert decimal_entities("Nig") not in stream, stream

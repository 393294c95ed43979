"""What the output policy blocks never reaches the browser or the stream store, and everything
shown or stored with an answer (citations, tool calls' names and ids, the runtime's error)
passes the same checks. Real chat turns (Celery eager, fake runtime at its seam)."""

from __future__ import annotations

import pytest

from agents import streaming
from agents.guardrails import enforce
from agents.models import Invocation
from tenants.context import tenant_context
from tests.agents.test_chat import start
from tests.guardrails.conftest import set_tier_policy
from tests.guardrails.test_enforcement import deltas, published_text, send, turn

pytestmark = pytest.mark.django_db


@pytest.fixture
def chatting(client, world, catalogue, runtime, eager):
    client.force_login(world.a.member)
    return start(client, world.a, catalogue.helpdesk)


def chunks(text: str, size: int = 10) -> list[str]:
    """`text` as a streaming runtime sends it: a few characters a delta."""
    return [text[i : i + size] for i in range(0, len(text), size)]


def stream_store(world, invocation) -> str:
    """Everything the stream store holds for the turn, as a reader resuming anywhere gets it."""
    with tenant_context(world.a.tenant):
        events = streaming.read(invocation.pk, 0)
    return " ".join(str(event.data) for event in events)


# --- R1: a blocked answer is checked before any of it is relayed -------------------------------

BENIGN = "Our refund window is thirty days for most purchases, and shipping is free. "


@pytest.mark.parametrize(
    ("policy", "answer", "secret"),
    [
        ({"blocked_terms": ["nightingale"], "output_pii": False}, "The plan is called Nightingale.", "plan is"),
        (
            {"denied_topics": [{"name": "Investment advice", "examples": ["which stocks should I buy now"]}]}
            | {"output_pii": False},
            "Which stocks should I buy now? Buy ACME shares today.",
            "ACME",
        ),
        ({"entities": {"card": "block"}, "output_pii": True}, "Your card is 4111 1111 1111 1111.", "4111"),
    ],
    ids=["blocked term", "denied topic", "pii block"],
)
def test_a_short_blocked_answer_is_never_relayed_nor_stored_in_the_stream(
    client, world, chatting, runtime, django_capture_on_commit_callbacks, policy, answer, secret
):
    set_tier_policy(world.a.tenant.tier, policy)
    runtime.events = deltas(*chunks(answer, 5))
    send(client, world, chatting, "Tell me", django_capture_on_commit_callbacks)

    invocation, _asked, stored, _events = turn(world)
    assert (invocation.status, stored.blocked_by_guardrails) == ("blocked", True)
    stream = stream_store(world, invocation)
    assert secret not in stream and answer[:8] not in stream, stream
    shown, events = published_text(world, invocation)
    assert not any(event.kind == "delta" for event in events)
    assert events[-1].kind == "blocked"


@pytest.mark.parametrize("output_pii", [False, True], ids=["deltas as they come", "redacted stream"])
def test_a_blocked_term_late_in_a_long_answer_is_never_relayed(
    client, world, chatting, runtime, django_capture_on_commit_callbacks, output_pii
):
    set_tier_policy(world.a.tenant.tier, {"blocked_terms": ["nightingale"], "output_pii": output_pii})
    answer = BENIGN * 4 + "The project is called Nightingale and it starts soon. " + BENIGN * 4
    runtime.events = deltas(*chunks(answer))
    send(client, world, chatting, "Tell me", django_capture_on_commit_callbacks)

    invocation, _asked, stored, _events = turn(world)
    assert invocation.status == "blocked"
    stream = stream_store(world, invocation)
    assert "Nightingale" not in stream and "Nighting" not in stream and "project is" not in stream, stream
    _shown, events = published_text(world, invocation)
    relayed = "".join(event.data.get("text", "") for event in events if event.kind == "delta")
    assert relayed.startswith(BENIGN * 2)  # what was checked clean well before it did stream
    assert stored.content == "The answer was withheld by your organisation's guardrails."


def test_an_answer_that_passes_still_streams_in_pieces_and_ends_whole(
    client, world, chatting, runtime, django_capture_on_commit_callbacks
):
    set_tier_policy(world.a.tenant.tier, {"blocked_terms": ["nightingale"], "output_pii": False})
    answer = BENIGN * 8
    runtime.events = deltas(*chunks(answer))
    send(client, world, chatting, "Tell me", django_capture_on_commit_callbacks)

    invocation, _asked, stored, _events = turn(world)
    shown, events = published_text(world, invocation)
    assert (invocation.status, stored.content, shown) == ("done", answer, answer)
    before_end = [e for e in events[:-1] if e.kind == "delta"]
    assert len(before_end) > 3  # streamed as it came, not only at the end


# --- R2: citations pass the output policy ------------------------------------------------------


def citation(**fields) -> dict:
    return {"type": "citation", "index": 1, "passage_id": "p1", "source": "policies/refunds.md"} | fields


def test_a_citation_is_redacted_where_the_answer_is(
    client, world, chatting, runtime, django_capture_on_commit_callbacks
):
    set_tier_policy(world.a.tenant.tier, {"entities": {"email": "redact", "phone": "redact"}})
    runtime.events = [
        citation(title="Mail jane.doe@example.com", excerpt="Call 555-201-3344 for refunds."),
        *deltas("See the refund policy."),
    ]
    send(client, world, chatting, "Refunds?", django_capture_on_commit_callbacks)

    invocation, _asked, stored, events = turn(world)
    expected = {
        "index": 1,
        "passage_id": "p1",
        "source": "policies/refunds.md",
        "title": "Mail [EMAIL]",
        "excerpt": "Call [PHONE] for refunds.",
    }
    assert (invocation.status, stored.citations) == ("done", [expected])
    stream = stream_store(world, invocation)
    assert "jane.doe" not in stream and "3344" not in stream
    assert [e.data for e in published_text(world, invocation)[1] if e.kind == "citation"] == [expected]
    assert sorted((e.stage, e.rule, e.action) for e in events) == [
        ("output", "email", "redact"),
        ("output", "phone", "redact"),
    ]


def test_a_citation_naming_another_tenant_is_withheld(
    client, world, chatting, runtime, django_capture_on_commit_callbacks
):
    set_tier_policy(world.a.tenant.tier, {"blocked_terms": ["nightingale"]})
    runtime.events = [
        citation(title="Bravo Inc pricing", snippet="Bravo Inc pays 10% less."),
        citation(index=2, passage_id="p2", title="Project Nightingale", url="https://example.com/x"),
        *deltas("See the sources."),
    ]
    send(client, world, chatting, "Prices?", django_capture_on_commit_callbacks)

    invocation, _asked, stored, events = turn(world)
    assert invocation.status == "done"
    stream = stream_store(world, invocation)
    for leaked in ("Bravo", "Nightingale", "10% less"):
        assert leaked not in stream and leaked not in str(stored.citations)
    assert stored.citations[0]["title"] == enforce.BLOCKED_VALUE
    assert stored.citations[1]["url"] == enforce.BLOCKED_VALUE
    assert {(e.stage, e.category, e.action) for e in events} == {
        ("output", "cross_tenant", "block"),
        ("output", "blocked_term", "block"),
    }


def test_the_events_of_a_citation_naming_another_tenant_keep_no_words_around_it(
    client, world, chatting, runtime, django_capture_on_commit_callbacks
):
    """Its admins read the tenant's guardrail events: an event of another rule on the same text
    keeps no excerpt of it either (the words next to the name may be that tenant's data)."""
    set_tier_policy(world.a.tenant.tier, {"entities": {"email": "redact"}})
    runtime.events = [
        citation(title="Bravo Inc pricing", snippet="Bravo Inc pays 10% less, ask ops@example.com."),
        *deltas("See the sources."),
    ]
    send(client, world, chatting, "Prices?", django_capture_on_commit_callbacks)

    _invocation, _asked, _stored, events = turn(world)
    assert sorted((e.category, e.excerpt) for e in events) == [
        ("cross_tenant", "[OTHER_TENANT]"),
        ("pii", "[EMAIL]"),
    ]


# --- R7: the runtime's error message, a tool call's name and id ---------------------------------


def test_a_runtime_error_message_is_redacted_where_the_answer_is(
    client, world, chatting, runtime, django_capture_on_commit_callbacks
):
    set_tier_policy(world.a.tenant.tier, {"entities": {"email": "redact"}})
    runtime.events = [{"type": "error", "message": "No mailbox for jane.doe@example.com"}]
    send(client, world, chatting, "Mail her", django_capture_on_commit_callbacks)

    invocation, _asked, stored, events = turn(world)
    assert (invocation.status, invocation.error, stored.error) == (
        "failed",
        "No mailbox for [EMAIL]",
        "No mailbox for [EMAIL]",
    )
    assert "jane.doe" not in stream_store(world, invocation)
    assert [(e.stage, e.rule, e.action) for e in events] == [("output", "email", "redact")]


def test_a_runtime_error_message_the_policy_blocks_is_replaced(
    client, world, chatting, runtime, django_capture_on_commit_callbacks
):
    runtime.events = [*deltas("Let me look. "), {"type": "error", "message": "Bravo Inc's index is unavailable"}]
    send(client, world, chatting, "Look it up", django_capture_on_commit_callbacks)

    invocation, _asked, stored, events = turn(world)
    assert invocation.status == "failed"
    assert "Bravo" not in invocation.error and "Bravo" not in stored.error and invocation.error
    assert invocation.error == stored.error == enforce.WITHHELD_ERROR
    assert "Bravo" not in stream_store(world, invocation)
    assert [(e.stage, e.category) for e in events] == [("output", "cross_tenant")]


def test_a_tool_calls_name_and_id_pass_the_output_policy(
    client, world, chatting, runtime, django_capture_on_commit_callbacks
):
    set_tier_policy(world.a.tenant.tier, {"entities": {"email": "redact"}})
    runtime.events = [
        {"type": "tool_call", "name": "mail:jane.doe@example.com", "id": "Bravo Inc-1", "input": {"q": "hours"}},
        *deltas("Done."),
    ]
    send(client, world, chatting, "Mail her", django_capture_on_commit_callbacks)

    invocation, _asked, stored, events = turn(world)
    assert invocation.status == "done"
    # Blocked (another tenant's name in its id): its arguments are withheld as in any blocked
    # call, its name, checked on its own, only redacted.
    expected = {"name": "mail:[EMAIL]", "id": enforce.BLOCKED_VALUE, "input": {"q": enforce.BLOCKED_VALUE}}
    assert stored.tool_calls == [expected]
    stream = stream_store(world, invocation)
    assert "jane.doe" not in stream and "Bravo" not in stream
    assert {(e.stage, e.category, e.action) for e in events} == {
        ("output", "pii", "redact"),
        ("output", "cross_tenant", "block"),
    }


def test_nothing_blocked_leaks_through_a_resumed_stream(
    client, world, chatting, runtime, django_capture_on_commit_callbacks
):
    """A reader resuming with Last-Event-ID after any event gets nothing of the blocked text."""
    set_tier_policy(world.a.tenant.tier, {"blocked_terms": ["nightingale"], "output_pii": False})
    runtime.events = deltas(*chunks(BENIGN + "Nightingale it is."))
    send(client, world, chatting, "Tell me", django_capture_on_commit_callbacks)
    with tenant_context(world.a.tenant):
        invocation = Invocation.objects.get()
        everything = streaming.read(invocation.pk, 0)
        for event in everything:
            resumed = streaming.read(invocation.pk, event.seq)
            assert "Nightingale" not in str([e.data for e in resumed])


# --- R5: another tenant's name split across deltas is seen whole before it is relayed ----------

ZERO_WIDTH_SPACE = "\u200b"
LONG_TENANT_NAME = "Consolidated Holdings and Logistics Partners of the Northern Atlantic Seaboard and Bay Region Ltd."


@pytest.mark.parametrize(
    ("spelling", "output_pii", "never_relayed"),
    [
        ("zero-width spaces", False, "Bravo"),
        ("zero-width spaces", True, "Bravo"),
        # Deltas as they come: the name's first 97 characters went out before its end came, as
        # any delta does; the check stops the stream at the delta that completes it.
        ("long name", False, "the plan is X"),
        ("long name", True, "Consolidated Holdings"),
    ],
    ids=["zero-width, deltas as they come", "zero-width, redacted stream", "long name, deltas", "long name, redacted"],
)
def test_another_tenants_name_split_across_two_deltas_is_never_relayed(
    client, world, chatting, runtime, django_capture_on_commit_callbacks, spelling, output_pii, never_relayed
):
    """The per-delta check of other tenants' markers reads the text before the new delta again
    as the detectors read it: a name padded with invisible characters (which the browser shows
    as the name) or as long as a tenant's name may be still ends within what it reads again."""
    set_tier_policy(world.a.tenant.tier, {"output_pii": output_pii})
    names = {"zero-width spaces": (ZERO_WIDTH_SPACE * 40).join("Bravo Inc"), "long name": LONG_TENANT_NAME}
    world.b.tenant.name = LONG_TENANT_NAME
    world.b.tenant.save(update_fields=["name"])
    name = names[spelling]
    cut = 97  # more than OVERLAP characters of the name before the cut
    runtime.events = deltas(BENIGN * 3, "As " + name[:cut], name[cut:] + " told us, the plan is X. ", BENIGN * 3)
    send(client, world, chatting, "Refunds?", django_capture_on_commit_callbacks)

    invocation, _asked, _stored, _events = turn(world)
    assert invocation.status == "blocked"
    _shown, events = published_text(world, invocation)
    relayed = "".join(e.data.get("text", "") for e in events if e.kind == "delta").replace(ZERO_WIDTH_SPACE, "")
    assert never_relayed not in relayed and "the plan is X" not in relayed, relayed

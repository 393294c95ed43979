"""A conversation is named by its first question: one line, at most 80 characters, cut at
a word boundary with an ellipsis when it is longer."""

from __future__ import annotations

import pytest

from agents.services import TITLE_MAX_CHARS, conversation_title
from tests.agents.test_chat import chat_url, in_tenant, post, signed_in_as, start

LONG_QUESTION = (
    "Could you explain how the refund window works for customers who bought an annual plan "
    "and then downgraded halfway through the year?"
)


@pytest.fixture
def chatting(client, world, catalogue, runtime, eager):
    signed_in_as(client, world.a.member)
    return start(client, world.a, catalogue.helpdesk)


def test_it_keeps_a_short_question_as_it_is():
    assert conversation_title("How long is the refund window?") == "How long is the refund window?"


def test_it_cuts_a_long_question_at_a_word_boundary_with_an_ellipsis():
    title = conversation_title(LONG_QUESTION)
    assert title.endswith("…")
    assert len(title) <= TITLE_MAX_CHARS == 80
    kept = title.removesuffix("…")
    assert LONG_QUESTION.startswith(kept)
    assert LONG_QUESTION[len(kept)] == " "  # the cut falls between two words
    # "…bought an annual" is 80 characters: with the ellipsis it would be 81.
    assert kept == "Could you explain how the refund window works for customers who bought an"


def test_it_makes_one_line_of_a_question_written_on_several():
    title = conversation_title("  Refunds:\n\n- annual plans\n- monthly plans  ")
    assert title == "Refunds: - annual plans - monthly plans"


def test_it_cuts_a_single_long_word_where_it_must():
    title = conversation_title("x" * 200)
    assert title == "x" * 79 + "…"


def test_it_keeps_a_whole_word_followed_by_punctuation_and_drops_the_punctuation():
    text = "Refunds, returns, exchanges, store credit, gift cards, vouchers, loyalty points, and more"
    title = conversation_title(text)
    assert title == "Refunds, returns, exchanges, store credit, gift cards, vouchers, loyalty points…"


@pytest.mark.parametrize("length", [80, 81])
def test_it_keeps_a_question_of_exactly_the_limit_and_cuts_one_longer(length):
    text = ("word " * 40)[:length]
    if length == 80:
        assert conversation_title(text) == text.strip()
    else:
        assert conversation_title(text).endswith("…")


def test_the_first_message_names_the_conversation_and_the_page_shows_it_at_once(
    client, world, chatting, django_capture_on_commit_callbacks
):
    response = post(client, world.a, chatting, LONG_QUESTION, django_capture_on_commit_callbacks)
    assert response.status_code == 202
    in_tenant(world.a, chatting.refresh_from_db)
    expected = "Could you explain how the refund window works for customers who bought an…"
    assert chatting.title == expected
    # The answer to the htmx post renames the page's heading and its entry in the list.
    body = response.content.decode()
    assert f'<span id="chat-title" hx-swap-oob="innerHTML">{expected}</span>' in body
    assert f'<span id="conversation-title-{chatting.pk}" hx-swap-oob="innerHTML">{expected}</span>' in body

    second = post(client, world.a, chatting, "And monthly plans?", django_capture_on_commit_callbacks)
    assert second.status_code == 202
    assert 'id="chat-title"' not in second.content.decode()  # named once, by the first question
    assert in_tenant(world.a, lambda: type(chatting).objects.get(pk=chatting.pk).title) == expected
    page = client.get(chat_url(world.a, f"{chatting.pk}/")).content.decode()
    assert expected in page

"""Model output is untrusted: an answer with HTML or script links renders as nothing executable.

The answer comes from the (fake) runtime through a real turn, and is checked where
the browser gets it: the conversation page and the fragment swapped in when a
stream ends. The checks parse the HTML: escaped text such as "&lt;script&gt;" is
harmless and allowed; elements and attributes are what could execute.
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from agents import markdown
from agents.models import Conversation, Message
from tenants.context import tenant_context

HOSTILE = (
    "Here you go <script>alert(1)</script>\n\n"
    "<img src=x onerror=alert(1)>\n\n"
    "[click me](javascript:alert(1)) and [fine](https://example.com/docs)\n\n"
    '<iframe src="https://evil.example/"></iframe>\n\n'
    '<a href="javascript:alert(2)" onclick="alert(3)">raw link</a>\n\n'
    "[data](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)"
)


class Elements(HTMLParser):
    """Every start tag with its attributes."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {name: value or "" for name, value in attrs}))


def elements(html: str) -> list[tuple[str, dict[str, str]]]:
    parser = Elements()
    parser.feed(html)
    return parser.tags


def answer_html(page: str, message_id: int) -> str:
    """The <article> of one message in a page."""
    start = page.index(f'id="msg-{message_id}"')
    return page[page.rindex("<article", 0, start) : page.index("</article>", start)]


def assert_nothing_executable(html: str) -> None:
    assert "<script" not in html.lower()
    assert "<iframe" not in html.lower()
    for tag, attrs in elements(html):
        assert tag not in {"script", "iframe", "object", "embed", "img", "style"}, tag
        assert not [name for name in attrs if name.startswith("on")], (tag, attrs)
        for name in ("href", "src", "action", "formaction"):
            value = attrs.get(name, "").strip().lower()
            assert not value.startswith(("javascript:", "data:", "vbscript:")), (tag, attrs)


@pytest.fixture
def hostile_answer(client, world, catalogue, runtime, eager, django_capture_on_commit_callbacks):
    runtime.events = [{"type": "delta", "text": HOSTILE[i : i + 7]} for i in range(0, len(HOSTILE), 7)]
    client.force_login(world.a.member)
    client.post("/t/alpha/chat/new/", {"agent": catalogue.helpdesk.pk})
    with tenant_context(world.a.tenant):
        conversation_id = Conversation.objects.get().pk
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            f"/t/alpha/chat/{conversation_id}/messages/", {"text": "Show me"}, HTTP_HX_REQUEST="true"
        )
    assert response.status_code == 202
    with tenant_context(world.a.tenant):
        answer = Message.objects.get(role="assistant")
    assert answer.content == HOSTILE  # stored as written; made safe when rendered
    return conversation_id, answer


def test_it_renders_a_hostile_answer_inertly_in_the_conversation(client, hostile_answer):
    conversation_id, answer = hostile_answer
    page = client.get(f"/t/alpha/chat/{conversation_id}/").content.decode()
    html = answer_html(page, answer.pk)
    assert_nothing_executable(html)
    assert '<a href="https://example.com/docs" rel="noopener noreferrer nofollow">fine</a>' in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # shown as text


def test_it_renders_a_hostile_answer_inertly_in_the_fragment(client, hostile_answer):
    _, answer = hostile_answer
    fragment = client.get(f"/t/alpha/chat/messages/{answer.pk}/").content.decode()
    assert_nothing_executable(fragment)
    assert "click me" in fragment


@pytest.mark.parametrize(
    "text",
    [
        "<script>alert(1)</script>",
        "<img src=x onerror=alert(1)>",
        "[x](javascript:alert(1))",
        "[x](JaVaScRiPt:alert(1))",
        "[x](  javascript:alert(1))",
        "<iframe src=https://evil.example></iframe>",
        "<svg onload=alert(1)>",
        '<a href="javascript:alert(1)">x</a>',
        "![x](javascript:alert(1))",
        '[x](https://example.com "title" onmouseover=alert(1))',
        "```html\n<script>alert(1)</script>\n```",
    ],
)
def test_the_renderer_outputs_nothing_executable(text):
    assert_nothing_executable(markdown.render(text))

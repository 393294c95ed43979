"""The chat path in a browser, against the product running as `make run` runs it.

A member of the demo tenant Acme signs in, starts a conversation, and watches the
answer arrive while the (scripted) runtime is still writing it; the answer's hostile
HTML and links render as nothing executable; copy and thumbs up work and the feedback
is stored. A long answer streams on across the server ending its stream every second
(the browser resumes with Last-Event-ID, nothing lost or repeated), then is stopped
mid-stream and the runtime sees the worker hang up.
A refused turn shows its reason and a Retry button, and Retry answers it. A turn that
fails after writing what the guardrails block shows their notice, never that text.

Web (uvicorn), Celery worker, broker, relay and database are real processes
(tests/e2e/product.py); only the agent runtime is a fake on loopback.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
from django.conf import settings
from playwright.sync_api import expect

from tenants.management.commands.seed_demo import DEMO_PASSWORD
from tests.e2e.product import running_product

pytestmark = pytest.mark.browser

SHOTS = Path(settings.BASE_DIR) / "var" / "screenshots" / "chat"
MEMBER = "member1@acme.example"
TIMEOUT_MS = 20_000  # a turn goes through the filesystem broker, polled once a second
CUSTOM = "X-Amzn-Bedrock-AgentCore-Runtime-Custom-"


@pytest.fixture(scope="module")
def product(tmp_path_factory):
    with running_product(tmp_path_factory.mktemp("product")) as running:
        yield running


@pytest.fixture
def page(product, launch_browser):
    yield from signed_in(product, launch_browser, MEMBER)


@pytest.fixture
def globex_page(product, launch_browser):
    """A member of Globex, whose tier blocks "project nightingale" in answers."""
    yield from signed_in(product, launch_browser, "member1@globex.example")


def signed_in(product, launch_browser, email: str):
    context = launch_browser().new_context(
        base_url=product.url, viewport={"width": 1280, "height": 900}, permissions=["clipboard-read", "clipboard-write"]
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.goto("/accounts/login/")
    page.fill("#id_login", email)
    page.fill("#id_password", DEMO_PASSWORD)
    page.click("#login-form button[type=submit]")
    expect(page.locator("body")).not_to_contain_text("The email address and/or password you specified are not correct")
    yield page


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def new_conversation(page, tenant: str = "acme") -> None:
    page.goto(f"/t/{tenant}/chat/")
    expect(page.locator("h1")).to_contain_text("Chat")
    page.locator("#new-conversation button[name=agent]").first.click()
    expect(page.locator("#composer-text")).to_be_visible()


def send(page, text: str) -> None:
    page.fill("#composer-text", text)
    page.click("#composer button[type=submit]")


def claims(authorization: str) -> dict:
    payload = authorization.removeprefix("Bearer ").split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_an_answer_streams_renders_safely_and_takes_feedback(product, page):
    runtime = product.runtime
    runtime.release.clear()
    new_conversation(page)
    shot(page, "01-new-conversation")
    send(page, "Show me some formatting")

    # The runtime has sent its first delta and holds the rest: the text on screen came by
    # streaming, while the answer is still open (Stop offered).
    streaming = page.locator(".msg-assistant.is-streaming")
    expect(streaming.locator("[data-stream-text]")).to_contain_text("Here is the first part.")
    expect(streaming.locator("[data-stop]")).to_be_visible()
    shot(page, "02-streaming")
    runtime.release.set()

    answer = page.locator(".msg-assistant.status-done").last
    expect(answer.locator(".prose strong")).to_have_text("bold")
    shot(page, "03-done")
    prose = answer.locator(".prose")
    for selector in ("script", "img", "iframe", "[onerror]", "[onclick]", "a[href^='javascript']"):
        assert prose.locator(selector).count() == 0, selector
    expect(prose.locator("a[href='https://example.com/docs']")).to_have_text("the docs")
    expect(prose).to_contain_text("<script>")  # shown as text, never run
    assert page.evaluate("window.__pwned") is None
    assert page.dialogs == []

    # What the runtime received: the tenant's context as headers and an act-on-behalf token.
    call = runtime.invocations()[-1]
    assert call.headers[f"{CUSTOM}Tier"] == "basic"
    assert call.headers[f"{CUSTOM}Deployment-Model"] == "pool"
    assert call.headers[f"{CUSTOM}Tenant-Id"].isdigit()
    assert 33 <= len(call.headers["X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"]) <= 256
    token = claims(call.headers["Authorization"])
    assert token["aud"] == settings.EXCHANGE_DEFAULT_AUDIENCE
    assert token["act"]["sub"] != token["sub"]  # the agent acts for the member; it is not the member
    assert call.json()["prompt"] == "Show me some formatting"

    # Copy puts the raw Markdown on the clipboard.
    answer.locator("[data-copy]").click()
    assert "Then **bold** text." in page.evaluate("navigator.clipboard.readText()")

    # Thumbs up is stored: pressed after a reload, and in the database.
    answer.get_by_role("button", name="Good answer").click()
    expect(answer.get_by_role("button", name="Good answer")).to_have_attribute("aria-pressed", "true")
    message_id = int(answer.get_attribute("id").removeprefix("msg-"))
    page.reload()
    expect(page.locator(f"#msg-{message_id}").get_by_role("button", name="Good answer")).to_have_attribute(
        "aria-pressed", "true"
    )
    assert product.sql("SELECT feedback FROM agents_message WHERE id = %s", (message_id,)) == [(1,)]


def test_a_long_answer_survives_reconnects_and_stop_ends_it(product, page):
    product.runtime.hung_up.clear()
    streams = []
    page.on("request", lambda request: streams.append(request.url) if "/events/" in request.url else None)
    new_conversation(page)
    send(page, "Tell me a long story")
    streaming = page.locator(".msg-assistant.is-streaming")
    text = streaming.locator("[data-stream-text]")
    expect(text).to_contain_text("Once upon a time (30).")

    # The server ends each stream after a second (SSE_STREAM_MAX_SECONDS) and the browser
    # resumes it with Last-Event-ID: the text on screen has every delta once, in order.
    assert len(streams) >= 2, streams
    told = [int(n) for n in re.findall(r"Once upon a time \((\d+)\)", text.text_content())]
    assert told == list(range(len(told)))
    streaming.locator("[data-stop]").click()

    stopped = page.locator(".msg-assistant.status-cancelled").last
    expect(stopped).to_contain_text("Stopped: the answer above is incomplete.")
    expect(stopped.get_by_role("button", name="Retry")).to_be_visible()
    shot(page, "04-stopped")
    assert product.runtime.hung_up.wait(10), "the worker kept reading the runtime's stream after Stop"


def test_a_refused_turn_shows_why_and_retry_answers_it(product, page):
    product.runtime.failed_once = False
    new_conversation(page)
    send(page, "Please fail once")

    failed = page.locator(".msg-assistant.status-failed").last
    expect(failed.get_by_role("alert")).to_contain_text("No answer.")
    expect(failed.get_by_role("alert")).to_contain_text("could not answer")
    expect(page.locator(".msg-user").last).to_contain_text("Please fail once")  # the question is kept
    shot(page, "05-failed")

    failed.get_by_role("button", name="Retry").click()
    done = page.locator(".msg-assistant.status-done").last
    expect(done.locator(".prose strong")).to_have_text("42")
    expect(page.locator(".msg-assistant.status-failed")).to_have_count(0)
    shot(page, "06-retried")


def test_a_failed_turns_blocked_answer_so_far_shows_as_blocked(product, globex_page):
    page = globex_page  # the runtime gives up after naming what Globex's guardrails block
    held = []  # the stored answer's fragment, held back to see the bubble as the stream left it

    def hold(route):
        held.append(route)

    page.route("**/chat/messages/*/", hold)
    new_conversation(page, "globex")
    send(page, "What is the secret plan?")

    live = page.locator(".msg-assistant.is-blocked")
    expect(live.locator(".msg-blocked")).to_have_text(
        "Blocked by guardrails. The answer was withheld by your organisation's guardrails."
    )
    expect(live).not_to_contain_text("Nightingale")
    shot(page, "07-failed-blocked-live")
    held[0].continue_()

    failed = page.locator(".msg-assistant.status-failed").last
    expect(failed.locator(".msg-blocked")).to_have_text(
        "Blocked by guardrails. The answer was withheld by your organisation's guardrails."
    )
    expect(failed.locator(".alert-error")).to_have_text("No answer. The model stopped mid-answer.")
    expect(failed.locator(".prose")).to_have_count(0)
    expect(failed.locator("[data-copy]")).to_have_count(0)
    expect(failed.get_by_role("button", name="Retry")).to_be_visible()
    assert "Nightingale" not in failed.text_content()
    shot(page, "08-failed-blocked")

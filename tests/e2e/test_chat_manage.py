"""A member names, renames and deletes a conversation in a real browser: the first
question names it at once (cut at a word, with an ellipsis), Rename and Delete open
small panels in the header, and Delete asks first."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from agents.models import Conversation
from tenants.context import tenant_context
from tests.agents.helpers import make_catalogue
from tests.e2e.conftest import SCREENSHOTS
from tests.e2e.test_billing_dashboard import sign_in

pytestmark = pytest.mark.browser

QUESTION = (
    "Could you explain how the refund window works for customers who bought an annual plan "
    "and then downgraded halfway through the year?"
)
TITLE = "Could you explain how the refund window works for customers who bought an…"


def shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"e2e-chat-manage-{name}.png"), full_page=True)


def test_a_member_names_renames_and_deletes_a_conversation(world, live_server, launch_browser, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True  # the turn runs at once, in process (offline model)
    make_catalogue(world.a.tenant)
    page = launch_browser().new_context(base_url=live_server.url, viewport={"width": 1366, "height": 860}).new_page()
    sign_in(page, world.a.member.email)
    page.goto("/t/alpha/chat/")
    page.locator("#new-conversation button[name=agent]").first.click()
    expect(page.locator("#chat-title")).to_have_text("New conversation")

    page.fill("[data-composer-input]", QUESTION)
    page.keyboard.press("Enter")
    # Named by the server's answer to the post, without a reload: heading and list entry.
    # With CELERY_TASK_ALWAYS_EAGER the turn runs inside that post, so the answer (and the
    # name with it) can take longer than expect()'s default 5 s on a loaded machine.
    expect(page.locator("#chat-title")).to_have_text(TITLE, timeout=15_000)
    expect(page.locator(".chat-sidebar [aria-current=page] .conversation-title")).to_have_text(TITLE)
    expect(page.locator(".msg-assistant").last).not_to_have_class("is-streaming", timeout=15_000)

    page.locator("#rename-conversation summary").click()
    expect(page.locator("#conversation-title-input")).to_be_focused()
    expect(page.locator("#conversation-title-input")).to_have_value(TITLE)  # the name it was just given
    shot(page, "01-rename-panel")
    page.fill("#conversation-title-input", "Refunds after a downgrade")
    page.locator("#rename-conversation button[type=submit]").click()
    expect(page.locator(".flash-success")).to_contain_text("Conversation renamed.")
    expect(page.locator("#chat-title")).to_have_text("Refunds after a downgrade")

    page.locator("#delete-conversation summary").click()
    panel = page.locator("#delete-conversation .chat-action-panel")
    expect(panel).to_contain_text("Delete this conversation?")
    expect(page.locator("#rename-conversation")).not_to_have_attribute("open", "")
    shot(page, "02-delete-confirmation")
    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    with tenant_context(world.a.tenant):
        assert Conversation.objects.get().deleted_at is None  # opening the panel deleted nothing

    page.locator("#delete-conversation summary").click()
    panel.get_by_role("button", name="Delete conversation").click()
    expect(page).to_have_url(f"{live_server.url}/t/alpha/chat/")
    expect(page.locator(".flash-success")).to_contain_text("Conversation deleted.")
    expect(page.locator("#conversations-title")).to_contain_text("0")
    shot(page, "03-chat-home-after-delete")
    with tenant_context(world.a.tenant):
        assert Conversation.objects.get().deleted_at is not None

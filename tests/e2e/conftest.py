"""Fixtures for the browser tests: Debian's chromium driven by Playwright.

The browser is never downloaded: Playwright launches /usr/bin/chromium. When it
is missing the tests fail (they do not skip), so CI cannot go green without them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SCREENSHOTS = Path(django_settings.BASE_DIR) / "var" / "screenshots"


# How long an `expect(...)` assertion waits for its condition. Playwright's default, 5 s, is
# a page's budget on a quiet machine; CI runs these beside thousands of other tests on two
# cores. A longer wait only guards against a hang: an assertion returns as soon as its
# condition holds.
ASSERTION_TIMEOUT_MS = 20_000


@pytest.fixture(autouse=True)
def _patient_assertions():
    from playwright.sync_api import expect

    expect.set_options(timeout=ASSERTION_TIMEOUT_MS)
    yield
    expect.set_options(timeout=ASSERTION_TIMEOUT_MS)


@pytest.fixture
def _allow_async_unsafe(monkeypatch):
    # Playwright's sync API runs an asyncio loop in this thread; without this Django
    # refuses ORM calls from the test (SynchronousOnlyOperation).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def launch_browser(_allow_async_unsafe) -> Iterator[Callable]:
    """Returns launch(): a fresh chromium. Launched from the test body, so a missing binary is a FAIL."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = []

        def launch():
            assert CHROMIUM.exists(), f"{CHROMIUM} is missing; the browser tests need Debian's chromium package"
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            launched.append(browser)
            return browser

        try:
            yield launch
        finally:
            for browser in launched:
                browser.close()


@pytest.fixture
def mail_links(settings, live_server):
    """Celery tasks run inline and links in emails point at the live server."""
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.SITE_URL = live_server.url
    return live_server.url


@pytest.fixture
def screenshot() -> Callable:
    """screenshot(page, "step"): saves var/screenshots/e2e-<step>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page, name: str) -> Path:
        path = SCREENSHOTS / f"e2e-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take

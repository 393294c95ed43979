"""What the web process prints: an expected 4xx is one line, a 5xx keeps its traceback."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from portal.log import ClientErrorsOnOneLine


@pytest.fixture
def console(monkeypatch):
    """The console handler settings.LOGGING installs, writing into a buffer."""
    [handler] = [h for h in logging.getLogger().handlers if isinstance(h.formatter, ClientErrorsOnOneLine)]
    out = io.StringIO()
    monkeypatch.setattr(handler, "stream", out)
    return out


@pytest.mark.django_db
def test_an_expected_403_prints_one_line_with_the_reason(client, world, console):
    client.force_login(world.a.member)
    assert client.get("/t/alpha/guardrails/").status_code == 403
    assert console.getvalue() == (
        "Forbidden (Permission denied): /t/alpha/guardrails/ (Your role (Member) cannot do this.)\n"
    )


def record(status: int) -> logging.LogRecord:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        exc_info = sys.exc_info()
    entry = logging.LogRecord("django.request", logging.ERROR, __file__, 1, "Failed: %s", ("/x/",), exc_info)
    entry.status_code = status
    return entry


def test_a_server_error_keeps_its_traceback():
    text = ClientErrorsOnOneLine().format(record(500))
    assert text.startswith("Failed: /x/\nTraceback") and "RuntimeError: boom" in text


def test_the_record_other_handlers_get_keeps_its_exception():
    entry = record(403)
    assert ClientErrorsOnOneLine().format(entry) == "Failed: /x/ (boom)"
    assert entry.exc_info is not None and entry.getMessage() == "Failed: /x/"

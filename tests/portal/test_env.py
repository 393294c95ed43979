"""Settings from the environment: a malformed value stops the process (portal/env.py)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from portal.env import env_email


def test_it_reads_an_email_address(monkeypatch):
    monkeypatch.setenv("SUPPORT_EMAIL", " support@provider.example ")
    assert env_email("SUPPORT_EMAIL") == "support@provider.example"


def test_it_reads_an_unset_variable_as_no_address(monkeypatch):
    monkeypatch.delenv("SUPPORT_EMAIL", raising=False)
    assert env_email("SUPPORT_EMAIL") == ""


@pytest.mark.parametrize("value", ["", "  "])
def test_it_reads_a_blank_value_as_no_address(monkeypatch, value):
    monkeypatch.setenv("SUPPORT_EMAIL", value)
    assert env_email("SUPPORT_EMAIL") == ""


def test_it_refuses_what_is_not_an_email_address(monkeypatch):
    monkeypatch.setenv("SUPPORT_EMAIL", "support at provider")
    with pytest.raises(ImproperlyConfigured, match="SUPPORT_EMAIL must be an email address"):
        env_email("SUPPORT_EMAIL")

"""`make run` (portal.devserver): links point where the server listens, whatever PORT says."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings

from portal import devserver


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("127.0.0.1", "8123", "http://127.0.0.1:8123"),
        ("localhost", "9000", "http://localhost:9000"),
        ("0.0.0.0", "8123", "http://127.0.0.1:8123"),  # noqa: S104 (where it listens, not a link)
        ("::1", "8123", "http://[::1]:8123"),
    ],
)
def test_it_builds_the_site_url_from_host_and_port(host, port, url):
    assert devserver.site_url(host, port) == url


def test_it_keeps_an_explicit_site_url():
    environ = {"SITE_URL": "https://portal.example.com"}
    devserver.configure_environment(environ, host="127.0.0.1", port="8123")
    assert environ == {"SITE_URL": "https://portal.example.com"}


def test_the_settings_derive_every_link_from_the_devservers_port():
    # A fresh interpreter: settings are read once per process, from the environment.
    env = {k: v for k, v in os.environ.items() if k not in ("SITE_URL", "TOKEN_ISSUER", "PORTAL_GATEWAY_URL")}
    env |= {"PORT": "8123", "HOST": "127.0.0.1", "DJANGO_SETTINGS_MODULE": "portal.settings"}
    script = (
        "from portal import devserver; devserver.configure_environment(); "
        "from django.conf import settings; "
        "print(settings.SITE_URL, settings.TOKEN_ISSUER, settings.PORTAL_GATEWAY_URL)"
    )
    out = subprocess.run(  # noqa: S603 (fixed argv)
        [sys.executable, "-c", script], env=env, cwd=settings.BASE_DIR, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["http://127.0.0.1:8123"] * 3

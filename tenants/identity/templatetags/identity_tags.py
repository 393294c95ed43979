"""Template helpers of the two-factor and session pages (templates/mfa, templates/usersessions)."""

from __future__ import annotations

import re

from django import template

from tenants.identity import mfa

register = template.Library()


@register.simple_tag(takes_context=True)
def mfa_status(context) -> dict:
    """Which of the user's tenants require two-factor, and where to continue once it is set up.

    The continue link is offered once: it is dropped from the session when shown
    to a user who has an authenticator app.
    """
    request = context["request"]
    user = request.user
    if not user.is_authenticated:
        return {"requiring": [], "continue_url": None, "has_totp": False}
    has_totp = mfa.has_totp(user)
    continue_url = mfa.continue_url(request)
    if has_totp and continue_url:
        request.session.pop(mfa.NEXT_SESSION_KEY, None)
    return {
        "requiring": mfa.tenants_requiring_mfa(user),
        "continue_url": continue_url if has_totp else None,
        "has_totp": has_totp,
    }


_BROWSERS = (("Edg/", "Edge"), ("OPR/", "Opera"), ("Firefox/", "Firefox"), ("Chrome/", "Chrome"), ("Safari/", "Safari"))
_SYSTEMS = (
    ("Windows", "Windows"),
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("Android", "Android"),
    ("Mac OS X", "macOS"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
)


@register.filter
def device_summary(user_agent: str) -> str:
    """A short name such as "Chrome on Linux" for a User-Agent header (the raw header goes in a title)."""
    user_agent = user_agent or ""
    browser = next((name for marker, name in _BROWSERS if marker in user_agent), "")
    system = next((name for marker, name in _SYSTEMS if marker in user_agent), "")
    if not browser and not system:
        return re.split(r"[\s/]", user_agent, maxsplit=1)[0] or "Unknown device"
    if browser and system:
        return f"{browser} on {system}"
    return browser or system

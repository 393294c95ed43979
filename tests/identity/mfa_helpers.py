"""Two-factor helpers: authenticator codes computed with allauth's own TOTP functions."""

from __future__ import annotations

import time

from allauth.mfa import app_settings
from allauth.mfa.models import Authenticator
from allauth.mfa.recovery_codes.internal.auth import RecoveryCodes
from allauth.mfa.totp.internal.auth import TOTP, format_hotp_value, generate_totp_secret, hotp_value

from tests.factories import PASSWORD


def totp_code(secret: str) -> str:
    """The code an authenticator app shows now. allauth accepts only the current period's
    code (no tolerance), so a code is not taken in the last 5 s of its period: the request
    that sends it could reach the server in the next one on a busy machine."""
    period = app_settings.TOTP_PERIOD
    if time.time() % period > period - 5:
        time.sleep(period - time.time() % period + 0.1)
    return format_hotp_value(hotp_value(secret, int(time.time()) // period))


def wrong_code(secret: str) -> str:
    right = totp_code(secret)
    return f"{(int(right) + 1) % 10 ** len(right):0{len(right)}d}"


def give_totp(user) -> str:
    """An authenticator app and recovery codes for `user`, as allauth stores them; returns the TOTP secret."""
    secret = generate_totp_secret()
    TOTP.activate(user, secret)
    RecoveryCodes.activate(user)
    return secret


def recovery_codes(user) -> list[str]:
    instance = Authenticator.objects.get(user=user, type=Authenticator.Type.RECOVERY_CODES)
    return RecoveryCodes(instance).get_unused_codes()


def sign_in_with_password(client, user):
    """allauth's sign-in form, so the session records a fresh authentication (as in a browser)."""
    return client.post("/accounts/login/", {"login": user.email, "password": PASSWORD})


def reauthenticate(client) -> None:
    """allauth asks for the password again before any change to two-factor settings."""
    response = client.post("/accounts/reauthenticate/", {"password": PASSWORD})
    assert response.status_code == 302, response.content

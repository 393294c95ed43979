"""DRF authentication with our access tokens (Authorization: Bearer …)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from rest_framework import authentication, exceptions

from tenants.identity import tokens

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClientPrincipal:
    """request.user for a machine client: authenticated, not a person."""

    client: object
    is_authenticated: bool = True
    is_anonymous: bool = False
    is_active: bool = True
    is_staff: bool = False
    pk: None = None

    @property
    def email(self) -> str:
        return ""

    def __str__(self) -> str:
        return f"client {self.client.client_id}"


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Malformed Authorization header.")
        try:
            raw = header[1].decode("ascii")
            token = tokens.validate(raw)
        except tokens.TenantSuspended as exc:
            # Still refused; the caller is told why rather than "invalid or expired".
            from portal.api import TenantSuspended  # portal.api imports DRF's views, which read this module

            log.info("bearer token refused: %s", exc.reason)
            raise TenantSuspended(exc.message)
        except (UnicodeDecodeError, tokens.InvalidToken) as exc:
            log.info("bearer token refused: %s", getattr(exc, "reason", exc))
            raise exceptions.AuthenticationFailed("The access token is invalid or expired.")
        if token.user is not None:
            return token.user, token
        return ClientPrincipal(client=token.client), token

    def authenticate_header(self, request):
        return 'Bearer realm="api"'

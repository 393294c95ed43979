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
            if raw.startswith("tpo_"):
                # An operator API token (tenants.identity.operator_tokens) speaks for no tenant:
                # refused here like any other token this service did not sign.
                raise tokens.InvalidToken("an operator token, which tenant routes do not take")
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


class OperatorTokenAuthentication(authentication.BaseAuthentication):
    """An operator API token (Authorization: Bearer tpo_…), on the operator API's routes only
    (portal.operator.api), before the other classes: any other bearer token is theirs.

    A token that is unknown, malformed, or whose owner is deactivated is answered as any
    bad bearer token is (401, "invalid or expired"), so it tells nothing about the operator
    API. A genuine token that was revoked or has expired is told which (401): its holder
    has the secret, and the detail says what to do. An owner who is no longer staff is
    authenticated and then answered as their session would be (404, portal.operator.api.StaffOnly)."""

    keyword = "bearer"

    def authenticate(self, request):
        from tenants.identity import operator_tokens

        header = authentication.get_authorization_header(request).split()
        if len(header) != 2 or header[0].lower() != self.keyword.encode() or not header[1].startswith(b"tpo_"):
            return None
        try:
            token = operator_tokens.authenticate(header[1].decode("ascii"))
        except (UnicodeDecodeError, operator_tokens.Refused) as exc:
            log.info("operator token refused: %s", getattr(exc, "detail", exc))
            if isinstance(exc, operator_tokens.Refused) and exc.known:
                raise exceptions.AuthenticationFailed(exc.detail)
            raise exceptions.AuthenticationFailed("The access token is invalid or expired.")
        return token.owner, token

    def authenticate_header(self, request):
        return 'Bearer realm="api"'

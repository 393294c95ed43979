"""The operator API's one rule of access, shared by every room's operator endpoints
(/api/v1/operator/…): billing (portal/operator/billing_api.py), the shared agent registry
(agents/registry/operator_api.py) and shared skills (agents/skills/operator_api.py).

Two credentials, both a staff member's own:

* a browser session: writes go through DRF's SessionAuthentication, which checks the CSRF
  token (the `csrftoken` cookie sent back as `X-CSRFToken`), as the console's forms do;
* an operator API token (Authorization: Bearer tpo_…, tenants.identity.operator_tokens),
  for automation: it authenticates as its owner, needs no CSRF token (no cookie is
  involved), and each route asks for one of its scopes (`operator_scopes`: reads and
  writes), else 403.

Tenant access tokens (JWTs from /oauth/token) speak for one tenant, so they are never an
operator credential, a staff member's own included. Anyone who is not an active staff
member gets 404, as the console answers, so the operator API's existence is not advertised.
"""

from __future__ import annotations

from contextlib import ExitStack

from rest_framework import permissions
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import NotFound, PermissionDenied

from tenants.context import all_tenants
from tenants.identity import operator_tokens
from tenants.identity.authentication import BearerTokenAuthentication, OperatorTokenAuthentication
from tenants.identity.models import OperatorToken

# The operator token first: a tenant's bearer token still authenticates (and is then
# refused with 404 by StaffOnly), so that it is answered as it always was.
AUTHENTICATION = [OperatorTokenAuthentication, BearerTokenAuthentication, SessionAuthentication]


class StaffOnly(permissions.BasePermission):
    """An active staff member, by session or operator token; anyone else: 404."""

    def has_permission(self, request, view) -> bool:
        from tenants.identity.tokens import AccessToken

        user = request.user
        if not (user and user.is_authenticated and user.is_active and user.is_staff) or isinstance(
            request.auth, AccessToken
        ):
            raise NotFound()
        return True


class OperatorTokenScope(permissions.BasePermission):
    """An operator token needs the route's scope: `operator_scopes[0]` to read (GET, HEAD,
    OPTIONS), `[1]` to write. A session may do everything its staff member may."""

    def has_permission(self, request, view) -> bool:
        if not isinstance(request.auth, OperatorToken):
            return True
        read, write = view.operator_scopes
        needed = read if request.method in permissions.SAFE_METHODS else write
        if needed not in request.auth.scopes:
            raise PermissionDenied(f"This operator token lacks the scope {needed}.")
        return True


class OperatorAPIMixin:
    """An operator endpoint: active staff only (else 404), by session or by an operator token
    with the route's scope (`operator_scopes`: to read, to write); once that is checked, the
    request runs across tenants (all_tenants, named by `operator_reason` for the audit trail),
    as the console's operator_view does, and with a token every audit entry names it; reset
    when the request ends, whatever happens."""

    authentication_classes = AUTHENTICATION
    permission_classes = [permissions.IsAuthenticated, StaffOnly, OperatorTokenScope]
    operator_reason = "operator API"
    operator_scopes: tuple[str, str] = (operator_tokens.CATALOGUE_READ, operator_tokens.CATALOGUE_WRITE)

    def dispatch(self, request, *args, **kwargs):
        self._operator_scope = ExitStack()
        try:
            return super().dispatch(request, *args, **kwargs)
        finally:
            self._operator_scope.close()

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)  # authentication, then the permissions
        self._operator_scope.enter_context(all_tenants(self.operator_reason))
        token = request.auth if isinstance(request.auth, OperatorToken) else None
        self._operator_scope.enter_context(operator_tokens.acting_with(token))

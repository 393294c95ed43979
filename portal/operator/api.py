"""The operator API's one rule of access, shared by every room's operator endpoints
(/api/v1/operator/…): billing (portal/operator/billing_api.py), the shared agent registry
(agents/registry/operator_api.py) and shared skills (agents/skills/operator_api.py).

Staff signed in with a browser session only: access tokens speak for one tenant, so a
bearer token is never an operator credential, a staff member's own included. Anyone
else gets 404, as the console answers, so the operator API's existence is not
advertised. Writes go through DRF's SessionAuthentication, which checks the CSRF token
(the `csrftoken` cookie sent back as `X-CSRFToken`), as the console's forms do.
"""

from __future__ import annotations

from contextlib import ExitStack

from rest_framework import permissions
from rest_framework.exceptions import NotFound

from tenants.context import all_tenants


class StaffSessionOnly(permissions.BasePermission):
    def has_permission(self, request, view) -> bool:
        from tenants.identity.tokens import AccessToken

        user = request.user
        if not (user and user.is_authenticated and user.is_active and user.is_staff) or isinstance(
            request.auth, AccessToken
        ):
            raise NotFound()
        return True


class OperatorAPIMixin:
    """An operator endpoint: staff sessions only (else 404), and, once that is checked, the
    request runs across tenants (all_tenants, named by `operator_reason` for the audit trail),
    as the console's operator_view does; reset when the request ends, whatever happens."""

    permission_classes = [permissions.IsAuthenticated, StaffSessionOnly]
    operator_reason = "operator API"

    def dispatch(self, request, *args, **kwargs):
        self._operator_scope = ExitStack()
        try:
            return super().dispatch(request, *args, **kwargs)
        finally:
            self._operator_scope.close()

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)  # authentication, then StaffSessionOnly
        self._operator_scope.enter_context(all_tenants(self.operator_reason))

"""API plumbing shared by every room: RFC 7807-style errors and the tenant-scoped base view."""

from __future__ import annotations

import logging
from contextlib import ExitStack

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from tenants.context import TenantNotSet, tenant_context
from tenants.identity.scopes import CLIENT_ACTIONS
from tenants.models import Membership, Tenant
from tenants.roles import Action, can

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"

# Agents act on behalf of a member, never for a machine (ARCHITECTURE.md §4): an API
# client's token has no person behind it, so every chat operation refuses it.
CLIENT_CANNOT_CHAT = (
    "Chat needs a person: agents (and the knowledge bases they read) act on behalf of a member, "
    "never for an API client. Use a member's access token."
)

_TITLES = {
    400: "Invalid request",
    401: "Authentication required",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    415: "Unsupported media type",
    429: "Too many requests",
    500: "Server error",
}


def problem(status_code: int, title: str | None = None, detail: str = "", **extra) -> dict:
    body = {
        "type": f"https://portal.local/problems/{status_code}",
        "title": title or _TITLES.get(status_code, "Error"),
        "status": status_code,
        "detail": detail,
    }
    body.update(extra)
    return body


def choice_param(request, name: str, allowed, *, default: str | None = None) -> str | None:
    """The query parameter `name` of a list endpoint's filter, one of `allowed` (its values,
    in the order the error lists them); `default` when it is absent. Any other value is a
    400 problem naming the parameter, the value and the values it takes: a filter that
    ignored it would answer every row, as if the client had asked for no filter at all."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    allowed = [str(value) for value in allowed]
    if raw not in allowed:
        shown = "".join(ch for ch in raw[:40] if ch.isprintable())
        raise exceptions.ValidationError({name: [f"Unknown {name} “{shown}”; use one of: {', '.join(allowed)}."]})
    return raw


def problem_response(status_code: int, title: str | None = None, detail: str = "", **extra) -> JsonResponse:
    return JsonResponse(
        problem(status_code, title, detail, **extra), status=status_code, content_type=PROBLEM_CONTENT_TYPE
    )


def _flatten(detail) -> str:
    if isinstance(detail, dict):
        return "; ".join(f"{key}: {_flatten(value)}" for key, value in detail.items())
    if isinstance(detail, list):
        return " ".join(_flatten(item) for item in detail)
    return str(detail)


class TenantSuspended(exceptions.PermissionDenied):
    default_code = "tenant_suspended"


class MFARequired(exceptions.PermissionDenied):
    """The tenant requires two-factor authentication and this signed-in member has none yet."""

    default_code = "mfa_required"


def problem_exception_handler(exc, context):
    """Every API error as {type,title,status,detail}; field errors under "errors"."""
    from portal.db import busy

    if busy.is_unavailable(exc):  # a database held past the busy timeout, or Redis down
        log.warning("service unavailable: %s answered 503: %s", context["request"].path, exc)
        return busy.problem_response(exc)
    if isinstance(exc, DjangoValidationError) and getattr(exc, "status", None) == 409:
        # A refusal because of the resource's state, which a request running at the same
        # moment changed (agents.services.ConversationConflict: deleted, or an answer running).
        body = problem(409, None, " ".join(exc.messages))
        return Response(body, status=409, content_type=PROBLEM_CONTENT_TYPE)
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        exc = exceptions.ValidationError(detail)
    elif isinstance(exc, TenantNotSet):
        log.error("tenant context missing in API view", exc_info=exc)
        exc = exceptions.NotFound()
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)

    response = exception_handler(exc, context)
    if response is None:
        return None  # a real bug: Django's 500 handler answers with a problem body
    extra = {}
    if isinstance(exc, exceptions.ValidationError):
        extra["errors"] = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        detail = _flatten(exc.detail)
    else:
        detail = _flatten(exc.detail) if hasattr(exc, "detail") else str(exc)
    if isinstance(exc, TenantSuspended):
        extra["reason"] = "tenant_suspended"
        if settings.SUPPORT_EMAIL:
            extra["support_email"] = settings.SUPPORT_EMAIL  # where to ask for the reactivation
    if isinstance(exc, MFARequired):
        extra["reason"] = "mfa_required"
    code = response.status_code
    body = problem(code, None, detail, **extra)
    new = Response(body, status=code, headers={k: v for k, v in response.items() if k != "Content-Type"})
    new.content_type = PROBLEM_CONTENT_TYPE
    return new


class TenantScopedAPIMixin:
    """Resolves `tenant_slug` from the URL, checks membership and role, sets the context.

    Non-members get 404, exactly as for a tenant that does not exist. The role
    needed for each action is declared in `action_permissions` (action name →
    tenants.roles.Action) and read as a table. The context is reset when the
    request finishes, whatever happens.
    """

    action_permissions: dict[str, str] = {}
    # The scope an action's token must hold when it is not its Action's (ACTION_SCOPES): a
    # room with scopes finer than the role's action (memory:read / memory:write under
    # agents.use) names them here; the role check stays the Action's.
    action_scopes: dict[str, str] = {}
    # What an API client is told when it asks for an action it may not take; None: the default.
    client_refusal: str | None = None
    # Actions a machine client (client_credentials token, no membership) may take: reads.
    # Changes need a person, whose role the services check, and so does chat: agents act
    # on behalf of a member, and a client is none (tenants.identity.scopes.CLIENT_ACTIONS).
    client_actions = CLIENT_ACTIONS

    def dispatch(self, request, *args, **kwargs):
        self._tenant_scope = ExitStack()
        try:
            return super().dispatch(request, *args, **kwargs)
        finally:
            self._tenant_scope.close()

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)  # authentication, IsAuthenticated, throttles
        from tenants import audit
        from tenants.identity.mfa import mfa_setup_required
        from tenants.identity.scopes import ACTION_SCOPES
        from tenants.identity.tokens import AccessToken

        token = request.auth if isinstance(request.auth, AccessToken) else None
        slug = kwargs.get("tenant_slug", "")
        # A token names its tenant, which validate() has just read, live: no second lookup.
        tenant = token.tenant if token is not None and token.tenant.slug == slug else Tenant.by_slug(slug)
        # A token is good for its own tenant only: any other slug is "not found".
        if tenant is None or (token is not None and token.tenant.pk != tenant.pk):
            raise exceptions.NotFound()
        self._tenant_scope.enter_context(tenant_context(tenant, user_id=request.user.pk))
        if token is not None and token.actors:
            # An act-on-behalf token: the services record its subject as the actor, so without
            # this an agent's changes would read in the audit log as the person's own.
            self._tenant_scope.enter_context(audit.via({"acting_agents": list(token.actors)}))
        membership = None
        if token is not None and token.membership is not None:
            membership = token.membership  # validate() has just read it, live, in this tenant
        elif token is None or token.user is not None:
            membership = Membership.objects.filter(user_id=request.user.pk).first()
            if membership is None:
                raise exceptions.NotFound()
            membership.tenant = tenant
        if not tenant.is_active:
            raise TenantSuspended(f"{tenant.name} is suspended: {tenant.suspended_reason or 'contact support.'}")
        if token is None and mfa_setup_required(request.user, tenant):
            # Session sign-in (the browser's scripts): the same rule as TenantMiddleware's.
            raise MFARequired(f"{tenant.name} requires two-factor authentication; set it up at /accounts/2fa/.")
        request.tenant = tenant
        request.membership = membership
        if not self._has_handler(request.method):
            # After the tenant checks, so a foreign tenant's URL still answers 404.
            raise exceptions.MethodNotAllowed(request.method)
        action = getattr(self, "action", None) or request.method.lower()
        required = self.action_permissions.get(action)
        if required is None:
            # An action nobody declared is refused: new endpoints fail closed.
            raise exceptions.PermissionDenied("This action is not available.")
        scope = self.action_scopes.get(action) or ACTION_SCOPES[required]
        if token is not None and scope not in token.scopes:
            raise exceptions.PermissionDenied(f"The access token lacks the scope {scope}.")
        if membership is not None and not can(membership.role, required):
            raise exceptions.PermissionDenied(f"Your role ({membership.role}) does not allow {required}.")
        if membership is None and required not in self.client_actions:
            if self.client_refusal:
                raise exceptions.PermissionDenied(self.client_refusal)
            if required == Action.USE_AGENTS:
                raise exceptions.PermissionDenied(CLIENT_CANNOT_CHAT)
            raise exceptions.PermissionDenied("API clients may read here but not change anything.")

    def _has_handler(self, method: str) -> bool:
        """Whether this view answers the method at all (405 for PUT on a read-only route)."""
        name = method.lower()
        if name not in self.http_method_names:
            return False
        if hasattr(self, "action_map"):  # a ViewSet: the router maps methods to actions
            return getattr(self, "action", None) is not None
        return hasattr(self, name)


def created(data) -> Response:
    return Response(data, status=status.HTTP_201_CREATED)

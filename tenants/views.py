"""Tenant admin screens: overview, members, invitations, audit log; accepting an invitation.

Views are thin: parse → access → service → render. The tenant and membership
come from TenantMiddleware; the role table decides what each view allows.
"""

from __future__ import annotations

import datetime as dt
import functools
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.core.exceptions import PermissionDenied
from django.core.handlers.asgi import ASGIRequest
from django.core.paginator import Paginator
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from tenants import entitlements, services
from tenants.access import access_invitation, access_membership
from tenants.audit import client_ip
from tenants.context import user_context
from tenants.forms import AcceptInvitationForm, AuditFilterForm, InviteForm, RoleForm
from tenants.models import AuditLog, Invitation, InvitationStatus, Membership, User
from tenants.roles import Action, Role, can


def tenant_view(action: str):
    """The view needs a tenant (set by the middleware) and a role allowing `action`."""

    def decorator(view):
        @functools.wraps(view)
        def wrapper(request, tenant_slug: str, *args, **kwargs):
            if request.tenant is None or request.tenant.slug != tenant_slug:
                raise Http404
            if not can(request.membership.role, action):
                raise PermissionDenied(f"Your role ({request.membership.get_role_display()}) cannot do this.")
            return view(request, *args, **kwargs)

        wrapper.required_action = action
        return wrapper

    return decorator


@tenant_view(Action.VIEW_TENANT)
def overview(request):
    from tenants.models import aws_bindings_apply

    tenant = request.tenant
    bindings = tenant.bindings
    context = {
        "limits": entitlements.effective_limits(tenant),
        "features": entitlements.describe(tenant),
        "bindings": bindings,
        # Shown, but not used on embedded defaults (AGENT_RUNTIME=local): the page says so.
        "aws_bindings_unused": not aws_bindings_apply()
        and any((bindings.runtime_arn, bindings.memory_id, bindings.knowledge_base_id, bindings.gateway_id)),
        "tools_gateway": bindings.dedicated_gateway(settings.AGENT_RUNTIME),
        "member_count": Membership.objects.count(),
        "pending_count": Invitation.objects.filter(status=InvitationStatus.PENDING).count(),
    }
    return render(request, "tenants/overview.html", context)


def _members_context(request, invite_form=None) -> dict:
    role = request.membership.role
    memberships = list(Membership.objects.select_related("user").order_by("user__email"))
    owner_count = sum(1 for m in memberships if m.role == Role.OWNER)
    rows = []
    for membership in memberships:
        is_owner = membership.role == Role.OWNER
        may_touch = can(role, Action.MANAGE_OWNERS) or not is_owner
        rows.append(
            {
                "membership": membership,
                "role_form": RoleForm(initial={"role": membership.role}, actor_role=role),
                "can_change": can(role, Action.CHANGE_ROLES) and may_touch,
                "can_remove": can(role, Action.REMOVE_MEMBERS) and may_touch and not (is_owner and owner_count <= 1),
                "is_last_owner": is_owner and owner_count <= 1,
            }
        )
    return {
        "rows": rows,
        "invitations": Invitation.objects.filter(status=InvitationStatus.PENDING).select_related("invited_by"),
        "invite_form": invite_form or InviteForm(actor_role=role),
        "can_invite": can(role, Action.INVITE_MEMBERS),
        "can_manage_invitations": can(role, Action.MANAGE_INVITATIONS),
    }


@tenant_view(Action.VIEW_MEMBERS)
def members(request):
    return render(request, "tenants/members.html", _members_context(request))


@require_POST
@tenant_view(Action.INVITE_MEMBERS)
def member_invite(request):
    form = InviteForm(request.POST, actor_role=request.membership.role)
    if form.is_valid():
        try:
            invitation = services.invite_member(
                services.Actor.from_request(request), email=form.cleaned_data["email"], role=form.cleaned_data["role"]
            )
        except services.ServiceError as exc:
            form.add_error("email", exc)
        else:
            messages.success(request, f"Invitation sent to {invitation.email}.")
            return redirect("tenants:members", tenant_slug=request.tenant.slug)
    return render(request, "tenants/members.html", _members_context(request, invite_form=form), status=400)


def _redirect_members(request):
    return redirect("tenants:members", tenant_slug=request.tenant.slug)


@require_POST
@tenant_view(Action.CHANGE_ROLES)
def member_change_role(request, membership_id):
    membership = access_membership(membership_id)
    form = RoleForm(request.POST, actor_role=request.membership.role)
    if not form.is_valid():
        messages.error(request, "Choose one of the roles offered.")
        return _redirect_members(request)
    try:
        services.change_role(services.Actor.from_request(request), membership, form.cleaned_data["role"])
    except services.ServiceError as exc:
        messages.error(request, exc.text)
    else:
        messages.success(request, f"{membership.user.email} is now {membership.get_role_display()}.")
        _say_which_api_clients_paused(request, membership.user)
    return _redirect_members(request)


def _say_which_api_clients_paused(request, user) -> None:
    """A member's API clients work on their rights; say so when a change pauses some."""
    from tenants.identity.services import paused_api_clients_of

    paused = len(paused_api_clients_of(user))
    if paused:
        clients = "1 API client they own is" if paused == 1 else f"{paused} API clients they own are"
        them = "it" if paused == 1 else "them"
        messages.warning(request, f"{clients} paused until an admin takes {them} over on the API clients page.")


@require_POST
@tenant_view(Action.REMOVE_MEMBERS)
def member_remove(request, membership_id):
    membership = access_membership(membership_id)
    try:
        services.remove_member(services.Actor.from_request(request), membership)
    except services.ServiceError as exc:
        messages.error(request, exc.text)
    else:
        messages.success(request, f"{membership.user.email} was removed.")
        _say_which_api_clients_paused(request, membership.user)
    return _redirect_members(request)


@require_POST
@tenant_view(Action.MANAGE_INVITATIONS)
def invitation_resend(request, invitation_id):
    invitation = access_invitation(invitation_id)
    try:
        services.resend_invitation(services.Actor.from_request(request), invitation)
    except services.ServiceError as exc:
        messages.error(request, exc.text)
    else:
        messages.success(request, f"Invitation to {invitation.email} sent again.")
    return _redirect_members(request)


@require_POST
@tenant_view(Action.MANAGE_INVITATIONS)
def invitation_revoke(request, invitation_id):
    invitation = access_invitation(invitation_id)
    try:
        services.revoke_invitation(services.Actor.from_request(request), invitation)
    except services.ServiceError as exc:
        messages.error(request, exc.text)
    else:
        messages.success(request, f"Invitation to {invitation.email} revoked.")
    return _redirect_members(request)


def _audit_log_page(request, form: AuditFilterForm, *, status: int = 200):
    entries = form.filter(AuditLog.objects.all())
    page = Paginator(entries, 50).get_page(request.GET.get("page"))
    context = {
        "form": form,
        "page": page,
        "export_query": urlencode(form.applied()),
        "may_export": entitlements.has_feature(request.tenant, services.AUDIT_EXPORT_FEATURE),
    }
    return render(request, "tenants/audit_log.html", context, status=status)


@tenant_view(Action.VIEW_AUDIT_LOG)
def audit_log(request):
    return _audit_log_page(request, AuditFilterForm.from_query(request.GET))


@tenant_view(Action.VIEW_AUDIT_LOG)
def audit_export(request):
    """The audit log as CSV: the rows the page's filters select, all of them, streamed."""
    if not entitlements.has_feature(request.tenant, services.AUDIT_EXPORT_FEATURE):
        # As the single sign-on page does for a plan without it: 403, with why and how to get it.
        return render(request, "tenants/audit_export_not_in_plan.html", status=403)
    form = AuditFilterForm.from_query(request.GET)
    if form.is_bound and not form.is_valid():
        # Exporting everything for a filter that did not parse would hand over more than was asked.
        return _audit_log_page(request, form, status=400)
    export = services.export_audit_log(
        services.Actor.from_request(request), form.filter(AuditLog.objects.all()), filters=form.applied()
    )
    return audit_export_response(request, export, f"{request.tenant.slug}-audit-log")


def audit_export_response(request, export, name: str) -> StreamingHttpResponse:
    """An audit log export as a CSV download, `name`-<UTC stamp>.csv (the operator console's too)."""
    chunks = export.achunks() if isinstance(request, ASGIRequest) else export.chunks()
    response = StreamingHttpResponse(chunks, content_type="text/csv; charset=utf-8")
    stamp = timezone.now().astimezone(dt.UTC).strftime("%Y%m%d-%H%M%SZ")
    response["Content-Disposition"] = f'attachment; filename="{name}-{stamp}.csv"'
    response["Cache-Control"] = "no-store"
    return response


def invitation_accept(request, token: str):
    """Anyone with the link: sign in or create an account, then join the tenant."""
    invitation = services.find_invitation(token)
    if invitation is None:
        return render(request, "tenants/invitation_invalid.html", {"reason": "unknown"}, status=404)
    tenant = invitation.tenant
    context = {"invitation": invitation, "tenant": tenant}
    if invitation.status != InvitationStatus.PENDING:
        return render(request, "tenants/invitation_invalid.html", {**context, "reason": invitation.status}, status=410)
    if invitation.is_expired:
        return render(request, "tenants/invitation_invalid.html", {**context, "reason": "expired"}, status=410)

    user = request.user if request.user.is_authenticated else None
    if user is None:
        from tenants.identity import sso

        connection = sso.enforced_connection_for_email(invitation.email)
        if connection is not None:
            # SSO is mandatory for this address: no password is ever set here. Signing
            # in through the IdP brings the person back to this page (or, for the
            # inviting tenant's own IdP, accepts the invitation on the way in).
            return sso.begin_sign_in(request, connection, email=invitation.email, next_url=request.path)
    existing = User.objects.filter(email__iexact=invitation.email).first()
    form = None
    if user is None and existing is None:
        form = AcceptInvitationForm(request.POST or None, email=invitation.email)

    if request.method == "POST":
        if user is None and existing is not None:
            # They have an account: sign in first, then come back here.
            return redirect(f"{reverse('account_login')}?next={request.path}")
        if user is None:
            if not form.is_valid():
                return render(request, "tenants/invitation_accept.html", {**context, "form": form}, status=400)
            user = User.objects.create_user(
                email=invitation.email,
                password=form.cleaned_data["password1"],
                full_name=form.cleaned_data["full_name"],
            )
            login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        try:
            services.accept_invitation(invitation, user, ip=client_ip(request))
        except services.ServiceError as exc:
            messages.error(request, exc.text)
            return render(request, "tenants/invitation_accept.html", {**context, "form": form}, status=400)
        messages.success(request, f"Welcome to {tenant.name}.")
        return redirect("tenants:overview", tenant_slug=tenant.slug)

    wrong_user = user is not None and user.email.lower() != invitation.email.lower()
    return render(
        request,
        "tenants/invitation_accept.html",
        {**context, "form": form, "has_account": existing is not None, "wrong_user": wrong_user},
    )


def my_tenants(user) -> list[Membership]:
    """The signed-in user's memberships everywhere (tenant switcher, home)."""
    with user_context(user.pk):
        return list(Membership.of_user(user).order_by("tenant__name"))

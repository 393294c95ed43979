"""The operator console: staff only, cross-tenant by design, every change and read audited.

Non-staff get 404: the console's existence is not advertised. Reads across
tenants run inside all_tenants("operator console") and use `unscoped` managers.
"""

from __future__ import annotations

import functools
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.paginator import Paginator
from django.db import transaction
from django.db.models import Count, F, Q
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from billing.accounting import month_start
from portal.operator import services as operator_services
from portal.operator.forms import OwnerInvitationForm, SuspendForm, TenantCreateForm, TenantUpdateForm, TierForm
from portal.operator.listing import ChoiceFilter, field_filter, list_context
from tenants import aws as tenant_aws
from tenants import entitlements, services
from tenants.audit import client_ip
from tenants.context import all_tenants
from tenants.forms import AuditFilterForm
from tenants.identity import scopes as scope_lib
from tenants.identity import services as identity_services
from tenants.identity import sso
from tenants.identity.forms import AgentIdentityForm
from tenants.identity.models import AgentGrant, AgentIdentity, ApiClient, SSOConnection, with_owner_role
from tenants.identity.screens import token_endpoint_url
from tenants.models import AuditLog, DeploymentModel, Invitation, Membership, Tenant, TenantStatus, Tier
from tenants.roles import Role
from tenants.views import audit_export_response

REASON = services.OPERATOR_REASON


def operator_view(view):
    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        if not (request.user.is_active and request.user.is_staff):
            raise Http404
        with all_tenants(REASON):
            return view(request, *args, **kwargs)

    wrapper.operator_only = True
    return wrapper


def _ip(request):
    return client_ip(request)


def audited_read(request, response, page: str, tenant: Tenant | None = None):
    """`response`, once the operator's read of one tenant's data (or of every tenant's, `tenant`
    None) is in the audit log. Recorded after rendering, so a page does not list its own visit."""
    operator_services.record_read(request.user, page, tenant=tenant, ip=_ip(request))
    return response


def _tenant_filters(tiers) -> list[ChoiceFilter]:
    deployments = [(value, value.capitalize()) for value in DeploymentModel.values]
    return [
        field_filter("status", "Status", TenantStatus.choices),
        field_filter("tier", "Tier", [(tier.slug, tier.name) for tier in tiers], field="tier__slug"),
        field_filter("deployment", "Deployment", deployments, field="deployment_model"),
    ]


@operator_view
def tenants(request):
    # Not an audited read: the platform's records of its tenants (portal/operator/services.py).
    tiers = list(Tier.objects.order_by("monthly_price", "name"))
    rows = Tenant.objects.select_related("tier").order_by("name", "pk")
    # A page at a time (listing.py): with a thousand tenants the whole list is a slow page.
    context, status = list_context(request, rows, search=("name", "slug"), filters=_tenant_filters(tiers))
    shown = [tenant.pk for tenant in context["page"]]
    counts = dict(
        Membership.unscoped.filter(tenant_id__in=shown)
        .values_list("tenant_id")
        .annotate(n=Count("id"))
        .values_list("tenant_id", "n")
    )
    context["table"] = [{"tenant": t, "members": counts.get(t.pk, 0)} for t in context["page"]]
    context["tiers"] = len(tiers)
    return render(request, "operator/tenants.html", context, status=status)


@operator_view
def tenant_create(request):
    form = TenantCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            tenant, invitation = services.create_tenant(
                request.user,
                slug=data["slug"],
                name=data["name"],
                tier=data["tier"],
                deployment_model=data["deployment_model"],
                region=data["region"],
                owner_email=data["owner_email"],
                ip=_ip(request),
            )
        except services.ServiceError as exc:
            form.add_error(None, exc)
        else:
            note = f" An owner invitation went to {invitation.email}." if invitation else ""
            messages.success(request, f"{tenant.name} is onboarded.{note}")
            return redirect("operator:tenant_detail", slug=tenant.slug)
    status = 400 if request.method == "POST" else 200
    return render(request, "operator/tenant_form.html", {"form": form}, status=status)


def _tenant_detail_context(tenant, form=None, suspend_form=None, owner_form=None):
    memberships = Membership.unscoped.filter(tenant=tenant).select_related("user").order_by("role", "user__email")
    return {
        "tenant": tenant,
        "form": form or TenantUpdateForm.for_tenant(tenant),
        "suspend_form": suspend_form or SuspendForm(),
        # Until the tenant has an owner, nobody but the operator can let one in.
        "owner_form": owner_form or OwnerInvitationForm(),
        "has_owner": any(m.role == Role.OWNER for m in memberships),
        "features": entitlements.describe(tenant),
        "limits": entitlements.effective_limits(tenant),
        "memberships": memberships,
        "invitations": Invitation.unscoped.filter(tenant=tenant, status="pending").select_related("invited_by"),
        "audit": AuditLog.unscoped.filter(tenant=tenant)[:20],
        # Paused ones with why, as the tenant's own page shows them (with_owner_role).
        "api_clients": with_owner_role(ApiClient.unscoped.filter(tenant=tenant))
        .select_related("created_by", "owner")
        .order_by("revoked_at", "-created_at"),
        "sso": SSOConnection.objects.filter(tenant=tenant).first(),
        "runtime_kind": settings.AGENT_RUNTIME,
        # The same rule as the tools gateway (agents.tools.services.served_by_gateway).
        "tools_gateway": tenant.bindings.dedicated_gateway(settings.AGENT_RUNTIME),
        # The role its AWS calls sign as ("" = the portal's own credentials), tenants.aws's rule.
        "aws_role": tenant_aws.role_for(tenant),
    }


@operator_view
def tenant_detail(request, slug):
    tenant = get_object_or_404(Tenant.objects.select_related("tier"), slug=slug)
    if request.method == "POST":
        form = TenantUpdateForm.for_tenant(tenant, data=request.POST)
        if form.is_valid():
            queue_before = tenant.bindings.celery_queue
            raise_to = form.budget_raise()
            try:
                with transaction.atomic():
                    services.update_tenant(
                        request.user, tenant, ip=_ip(request), raise_budget_to=raise_to, **form.changes()
                    )
                    operator_services.set_features(request.user, tenant, ip=_ip(request), **form.feature_changes())
            except services.BudgetBelowPlan as exc:
                form.add_error(None, exc)
                form.offer_budget_raise(exc.lowest, exc.cap)
            except services.ServiceError as exc:
                form.add_error(None, exc)
            else:
                raised = getattr(tenant, "budget_raised_to", None)
                note = f" Its monthly budget cap was raised to ${raised:,.2f}." if raised is not None else ""
                messages.success(request, f"{tenant.name} was updated.{note}")
                if tenant.bindings.celery_queue != queue_before and (warning := services.queue_warning(tenant)):
                    messages.warning(request, warning)
                return redirect("operator:tenant_detail", slug=tenant.slug)
        tenant.refresh_from_db()
        response = render(request, "operator/tenant_detail.html", _tenant_detail_context(tenant, form=form), status=400)
        return audited_read(request, response, "tenant_detail", tenant)
    response = render(request, "operator/tenant_detail.html", _tenant_detail_context(tenant))
    return audited_read(request, response, "tenant_detail", tenant)


@require_POST
@operator_view
def tenant_suspend(request, slug):
    tenant = get_object_or_404(Tenant.objects.select_related("tier"), slug=slug)
    form = SuspendForm(request.POST)
    if not form.is_valid():
        context = _tenant_detail_context(tenant, suspend_form=form)
        response = render(request, "operator/tenant_detail.html", context, status=400)
        return audited_read(request, response, "tenant_detail", tenant)
    try:
        services.set_tenant_status(
            request.user, tenant, TenantStatus.SUSPENDED, form.cleaned_data["reason"], _ip(request)
        )
    except services.ServiceError as exc:
        messages.error(request, exc.text)
    else:
        messages.success(request, f"{tenant.name} is suspended.")
    return redirect("operator:tenant_detail", slug=tenant.slug)


@require_POST
@operator_view
def tenant_reactivate(request, slug):
    tenant = get_object_or_404(Tenant.objects.select_related("tier"), slug=slug)
    try:
        services.set_tenant_status(request.user, tenant, TenantStatus.ACTIVE, ip=_ip(request))
    except services.ServiceError as exc:
        messages.error(request, exc.text)
    else:
        messages.success(request, f"{tenant.name} is active again.")
    return redirect("operator:tenant_detail", slug=tenant.slug)


@require_POST
@operator_view
def tenant_invitation_resend(request, slug, invitation_id):
    tenant = get_object_or_404(Tenant, slug=slug)
    try:
        invitation = services.operator_resend_invitation(request.user, tenant, invitation_id, ip=_ip(request))
    except services.ServiceError as exc:
        messages.error(request, exc.text)
    else:
        messages.success(request, f"A new invitation link went to {invitation.email}; the old one stopped working.")
    return redirect(reverse("operator:tenant_detail", args=[tenant.slug]) + "#inv-title")


@require_POST
@operator_view
def tenant_invitation_revoke(request, slug, invitation_id):
    tenant = get_object_or_404(Tenant, slug=slug)
    try:
        invitation = services.operator_revoke_invitation(request.user, tenant, invitation_id, ip=_ip(request))
    except services.ServiceError as exc:
        messages.error(request, exc.text)
    else:
        messages.success(request, f"The invitation to {invitation.email} is revoked; its link no longer works.")
    return redirect(reverse("operator:tenant_detail", args=[tenant.slug]) + "#inv-title")


@require_POST
@operator_view
def tenant_invite_owner(request, slug):
    tenant = get_object_or_404(Tenant.objects.select_related("tier"), slug=slug)
    form = OwnerInvitationForm(request.POST)
    if form.is_valid():
        try:
            invitation = services.operator_invite_owner(request.user, tenant, form.cleaned_data["email"], _ip(request))
        except services.ServiceError as exc:
            form.add_error("email", exc)
        else:
            messages.success(request, f"An owner invitation went to {invitation.email}.")
            return redirect(reverse("operator:tenant_detail", args=[tenant.slug]) + "#inv-title")
    context = _tenant_detail_context(tenant, owner_form=form)
    response = render(request, "operator/tenant_detail.html", context, status=400)
    return audited_read(request, response, "tenant_detail", tenant)


@operator_view
def tiers(request):
    rows = Tier.objects.annotate(tenant_count=Count("tenants")).order_by("monthly_price")
    return render(request, "operator/tiers.html", {"tiers": rows})


@operator_view
def tier_edit(request, slug=None):
    tier = get_object_or_404(Tier, slug=slug) if slug else Tier()
    form = TierForm(request.POST or None, instance=tier)
    if request.method == "POST" and form.is_valid():
        try:
            tier = services.save_tier(
                request.user, form.save(commit=False), ip=_ip(request), raise_budgets=form.budget_raises()
            )
        except services.BudgetsBelowTierFee as exc:
            form.add_error(None, exc)
            form.offer_budget_raises(exc.shortfalls)
        except services.ServiceError as exc:
            form.add_error(None, exc)
        else:
            repriced = tier.repriced_invoices
            note = (
                f" {month_start():%B %Y} is re-priced: the draft invoice{'s' if repriced != 1 else ''} of "
                f"{repriced} tenant{'s' if repriced != 1 else ''} {'were' if repriced != 1 else 'was'} redrawn."
                if repriced
                else ""
            )
            if tier.budgets_raised:
                raised = ", ".join(
                    f"{tenant.name} (${s.cap:,.2f} → ${s.lowest:,.2f})" for tenant, s in tier.budgets_raised
                )
                note += f" Monthly budget caps raised to the new fee: {raised}."
            messages.success(request, f"Tier {tier.name} saved.{note}")
            return redirect("operator:tiers")
    status = 400 if request.method == "POST" else 200
    context = {"form": form, "tier": tier}
    if tier.pk:
        # Said before saving: a price change re-prices the running month of these tenants.
        context["reprice_month"] = month_start()
        context["reprice_count"] = len(services.tier_tenants_billed(Tier.objects.get(pk=tier.pk)))
    return render(request, "operator/tier_form.html", context, status=status)


@operator_view
def audit_log(request):
    return _audit_log_page(request, AuditFilterForm.from_query(request.GET))


def _audit_log_page(request, form: AuditFilterForm, *, status: int = 200):
    entries = form.filter(AuditLog.unscoped.select_related("tenant"))
    page = Paginator(entries, 50).get_page(request.GET.get("page"))
    context = {"form": form, "page": page, "export_query": urlencode(form.applied())}
    response = render(request, "operator/audit_log.html", context, status=status)
    return audited_read(request, response, "audit_log")


@operator_view
def audit_export(request):
    """The audit log of every tenant and the platform as CSV: what the page's filters select, streamed."""
    form = AuditFilterForm.from_query(request.GET)
    if form.is_bound and not form.is_valid():
        # Exporting everything for a filter that did not parse would hand over more than was asked.
        return _audit_log_page(request, form, status=400)
    export = operator_services.export_audit_log(
        request.user,
        form.filter(AuditLog.unscoped.select_related("tenant")),
        filters=form.applied(),
        ip=_ip(request),
    )
    return audit_export_response(request, export, "platform-audit-log")


# --- agent identities -----------------------------------------------------------------------


AGENT_IDENTITY_FILTERS = [
    ChoiceFilter(
        "owner",
        "Owner",
        [("shared", "Shared"), ("tenant", "A tenant's own")],
        lambda value: Q(owner_tenant__isnull=value == "shared"),
    ),
    ChoiceFilter(
        "status",
        "Status",
        [("active", "Active"), ("disabled", "Disabled")],
        lambda value: Q(disabled_at__isnull=value == "active"),
    ),
]


def _agent_identities_page(request, form=None, *, status: int = 200):
    """The list lists tenants' own agents too, so reading it is audited (across tenants)."""
    agents = AgentIdentity.objects.select_related("owner_tenant").order_by(
        F("owner_tenant__name").asc(nulls_first=True), "name", "pk"
    )
    context, list_status = list_context(
        request,
        agents,
        search=("name", "client_id", "owner_tenant__name", "owner_tenant__slug"),
        filters=AGENT_IDENTITY_FILTERS,
    )
    shown = list(context["page"])
    grants = dict(
        AgentGrant.unscoped.filter(agent__in=shown)
        .values_list("agent_id")
        .annotate(n=Count("id"))
        .values_list("agent_id", "n")
    )
    context["rows"] = [{"agent": agent, "grants": grants.get(agent.pk, 0)} for agent in shown]
    context["form"] = form or AgentIdentityForm(allowed_scopes=scope_lib.SCOPES)
    response = render(request, "operator/agent_identities.html", context, status=max(status, list_status))
    return audited_read(request, response, "agent_identities")


@operator_view
def agent_identities(request):
    return _agent_identities_page(request)


@never_cache
@require_POST
@operator_view
def agent_identity_create(request):
    form = AgentIdentityForm(request.POST, allowed_scopes=scope_lib.SCOPES)
    if form.is_valid():
        try:
            agent, secret = identity_services.create_shared_agent_identity(
                request.user,
                name=form.cleaned_data["name"],
                allowed_scopes=form.cleaned_data["allowed_scopes"],
                ip=_ip(request),
            )
        except services.ServiceError as exc:
            form.add_error(None, exc)
        else:
            return _agent_secret_page(request, agent, secret, rotated=False)
    return _agent_identities_page(request, form, status=400)


def _agent_secret_page(request, agent, secret: str, *, rotated: bool):
    context = {
        "kind": "agent",
        "name": agent.name,
        "secret": secret,
        "rotated": rotated,
        "scopes": agent.allowed_scopes,
        "client_id": agent.client_id,
        "token_url": token_endpoint_url(),
        "is_agent": True,
        "done_url": reverse("operator:agent_identities"),
    }
    return render(request, "operator/agent_identity_secret.html", context)


@never_cache
@require_POST
@operator_view
def agent_identity_rotate(request, agent_id):
    # Shared agents only: a tenant's own agent is rotated by that tenant's admins.
    agent = get_object_or_404(AgentIdentity, pk=agent_id, owner_tenant__isnull=True)
    try:
        secret = identity_services.rotate_agent_secret(request.user, agent, ip=_ip(request))
    except services.ServiceError as exc:
        messages.error(request, exc.text)
        return redirect("operator:agent_identities")
    return _agent_secret_page(request, agent, secret, rotated=True)


def _set_agent_enabled(request, agent_id, *, enabled: bool):
    agent = get_object_or_404(AgentIdentity.objects.select_related("owner_tenant"), pk=agent_id)
    try:
        identity_services.set_agent_identity_enabled(request.user, agent, enabled=enabled, ip=_ip(request))
    except services.ServiceError as exc:
        messages.error(request, exc.text)
    else:
        if enabled:
            messages.success(request, f"{agent.name} is enabled again.")
        else:
            messages.success(request, f"{agent.name} is disabled: it can no longer get tokens or act for anyone.")
    return redirect("operator:agent_identities")


@require_POST
@operator_view
def agent_identity_disable(request, agent_id):
    return _set_agent_enabled(request, agent_id, enabled=False)


@require_POST
@operator_view
def agent_identity_enable(request, agent_id):
    return _set_agent_enabled(request, agent_id, enabled=True)


@require_POST
@operator_view
def tenant_api_client_revoke(request, slug, client_id):
    tenant = get_object_or_404(Tenant, slug=slug)
    client = get_object_or_404(ApiClient.unscoped.select_related("tenant"), tenant=tenant, pk=client_id)
    try:
        identity_services.operator_revoke_api_client(request.user, client, ip=_ip(request))
    except services.ServiceError as exc:
        messages.error(request, exc.text)
    else:
        messages.success(request, f"API client {client.name} of {tenant.name} was revoked.")
    return redirect("operator:tenant_detail", slug=tenant.slug)


@require_POST
@operator_view
def tenant_sso_verify_domain(request, slug):
    tenant = get_object_or_404(Tenant.objects.select_related("tier"), slug=slug)
    try:
        claim = sso.operator_verify_domain(tenant, request.POST.get("domain", ""), actor=request.user, ip=_ip(request))
    except services.ServiceError as exc:
        messages.error(request, exc.text)
    else:
        messages.success(request, f"{claim.domain} is verified for {tenant.name}.")
    return redirect("operator:tenant_detail", slug=tenant.slug)


@require_POST
@operator_view
def tenant_sso_disable(request, slug):
    tenant = get_object_or_404(Tenant.objects.select_related("tier"), slug=slug)
    try:
        connection = sso.force_disable_sso(
            tenant, reason=request.POST.get("reason", "")[:300], actor=request.user, ip=_ip(request)
        )
    except services.ServiceError as exc:
        messages.error(request, exc.text)
    else:
        if connection is None:
            messages.error(request, f"{tenant.name} has no single sign-on configured.")
        else:
            messages.success(request, f"Single sign-on of {tenant.name} is switched off.")
    return redirect("operator:tenant_detail", slug=tenant.slug)

"""The operator console: staff only, cross-tenant by design, every change audited.

Non-staff get 404: the console's existence is not advertised. Reads across
tenants run inside all_tenants("operator console") and use `unscoped` managers.
"""

from __future__ import annotations

import functools

from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.paginator import Paginator
from django.db.models import Count, Q
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from portal.operator.forms import SuspendForm, TenantCreateForm, TenantUpdateForm, TierForm
from tenants import entitlements, services
from tenants.audit import client_ip
from tenants.context import all_tenants
from tenants.forms import AuditFilterForm
from tenants.models import AuditLog, Invitation, Membership, Tenant, TenantStatus, Tier

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


@operator_view
def tenants(request):
    # PostgreSQL refuses NUL bytes in a query parameter (a 500); no name contains one.
    query = request.GET.get("q", "").replace("\x00", "").strip()[:100]
    rows = Tenant.objects.select_related("tier").order_by("name")
    if query:
        rows = rows.filter(Q(name__icontains=query) | Q(slug__icontains=query))
    counts = dict(Membership.unscoped.values_list("tenant_id").annotate(n=Count("id")).values_list("tenant_id", "n"))
    table = [{"tenant": t, "members": counts.get(t.pk, 0)} for t in rows]
    return render(request, "operator/tenants.html", {"table": table, "q": query, "tiers": Tier.objects.count()})


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


def _tenant_detail_context(tenant, form=None, suspend_form=None):
    return {
        "tenant": tenant,
        "form": form or TenantUpdateForm.for_tenant(tenant),
        "suspend_form": suspend_form or SuspendForm(),
        "features": entitlements.describe(tenant),
        "limits": entitlements.effective_limits(tenant),
        "memberships": Membership.unscoped.filter(tenant=tenant).select_related("user").order_by("role", "user__email"),
        "invitations": Invitation.unscoped.filter(tenant=tenant, status="pending"),
        "audit": AuditLog.unscoped.filter(tenant=tenant)[:20],
    }


@operator_view
def tenant_detail(request, slug):
    tenant = get_object_or_404(Tenant.objects.select_related("tier"), slug=slug)
    if request.method == "POST":
        form = TenantUpdateForm.for_tenant(tenant, data=request.POST)
        if form.is_valid():
            try:
                services.update_tenant(request.user, tenant, ip=_ip(request), **form.changes())
            except services.ServiceError as exc:
                form.add_error(None, exc)
            else:
                messages.success(request, f"{tenant.name} was updated.")
                return redirect("operator:tenant_detail", slug=tenant.slug)
        tenant.refresh_from_db()
        return render(request, "operator/tenant_detail.html", _tenant_detail_context(tenant, form=form), status=400)
    return render(request, "operator/tenant_detail.html", _tenant_detail_context(tenant))


@require_POST
@operator_view
def tenant_suspend(request, slug):
    tenant = get_object_or_404(Tenant.objects.select_related("tier"), slug=slug)
    form = SuspendForm(request.POST)
    if not form.is_valid():
        context = _tenant_detail_context(tenant, suspend_form=form)
        return render(request, "operator/tenant_detail.html", context, status=400)
    try:
        services.set_tenant_status(
            request.user, tenant, TenantStatus.SUSPENDED, form.cleaned_data["reason"], _ip(request)
        )
    except services.ServiceError as exc:
        messages.error(request, " ".join(exc.messages))
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
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"{tenant.name} is active again.")
    return redirect("operator:tenant_detail", slug=tenant.slug)


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
            tier = services.save_tier(request.user, form.save(commit=False), ip=_ip(request))
        except services.ServiceError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, f"Tier {tier.name} saved.")
            return redirect("operator:tiers")
    status = 400 if request.method == "POST" else 200
    return render(request, "operator/tier_form.html", {"form": form, "tier": tier}, status=status)


@operator_view
def audit_log(request):
    form = AuditFilterForm(request.GET or None)
    entries = form.filter(AuditLog.unscoped.select_related("tenant"))
    page = Paginator(entries, 50).get_page(request.GET.get("page"))
    return render(request, "operator/audit_log.html", {"form": form, "page": page})

"""Single sign-on screens: the tenant admin's settings page, the "Continue with
single sign-on" step of the sign-in page, and the callback the IdP redirects to.

The sign-in itself is allauth's (tenants/identity/sso_provider.py) with the
decisions in tenants/adapters.py; these views only parse, look up and hand over.
"""

from __future__ import annotations

from allauth.account.utils import get_next_redirect_url
from allauth.socialaccount.models import SocialApp
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from tenants import entitlements, services
from tenants.identity import sso
from tenants.identity.sso_forms import SSOConnectionForm, SSOStartForm
from tenants.identity.sso_provider import TenantOIDCAdapter, TenantSSOCallbackView
from tenants.roles import Action, can
from tenants.services import Actor
from tenants.views import tenant_view

# --- tenant admin ------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@tenant_view(Action.MANAGE_SSO)
def settings_page(request):
    tenant = request.tenant
    if not entitlements.has_feature(tenant, "sso"):
        return render(request, "identity/sso_not_in_tier.html", status=403)
    connection = sso.connection_of(tenant)
    can_change_provider = can(request.membership.role, Action.MANAGE_SSO_PROVIDER)
    if connection is None and not can_change_provider and request.method == "POST":
        raise PermissionDenied("Only an owner can set up single sign-on.")
    status = 200
    if request.method == "POST":
        form = SSOConnectionForm(request.POST, connection=connection, can_change_provider=can_change_provider)
        if form.is_valid():
            try:
                sso.save_sso_connection(Actor.from_request(request), **form.cleaned_data)
            except services.ServiceError as exc:
                form.add_error(None, exc)
            else:
                messages.success(request, "Single sign-on settings saved.")
                return redirect("tenants:sso_settings", tenant_slug=tenant.slug)
        status = 400
    else:
        form = SSOConnectionForm(connection=connection, can_change_provider=can_change_provider)
    provider_id = connection.provider_id if connection is not None else sso.provider_id_for(tenant)
    context = {
        "form": form,
        "connection": connection,
        "can_change_provider": can_change_provider,
        "usable": connection is not None and sso.is_usable(connection),
        "redirect_uri": request.build_absolute_uri(sso.callback_path(provider_id)),
        "domains": [
            {"claim": claim, "name": name, "value": value}
            for claim in (connection.domains.all() if connection is not None else [])
            for name, value in [sso.challenge_record(claim)]
        ],
    }
    return render(request, "identity/sso_settings.html", context, status=status)


@require_POST
@tenant_view(Action.MANAGE_SSO)
def disable(request):
    try:
        sso.disable_sso_connection(Actor.from_request(request))
    except services.ServiceError as exc:
        messages.error(request, exc.text)
    else:
        messages.success(request, "Single sign-on is off. Everyone signs in with a password again.")
    return redirect("tenants:sso_settings", tenant_slug=request.tenant.slug)


@require_POST
@tenant_view(Action.MANAGE_SSO)
def verify_domain(request):
    """Look up the domain's challenge TXT record now (the admin has just published it)."""
    try:
        claim = sso.verify_domain(Actor.from_request(request), request.POST.get("domain", ""))
    except services.ServiceError as exc:
        messages.error(request, exc.text)
    else:
        messages.success(request, f"{claim.domain} is verified: its people can now sign in through your IdP.")
    return redirect("tenants:sso_settings", tenant_slug=request.tenant.slug)


# --- signing in --------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def start(request):
    """Email → the IdP of the tenant that claims its domain.

    The sign-in form's "Continue with single sign-on" button posts here (its
    email field is called "login"); the password, if typed, is ignored.
    """
    next_url = get_next_redirect_url(request)
    if request.method == "POST":
        data = request.POST.copy()
        if not data.get("email") and data.get("login"):
            data["email"] = data["login"]
        form = SSOStartForm(data)
        if form.is_valid():
            email = form.cleaned_data["email"]
            connection = sso.usable_connection_for_email(email)
            if connection is not None:
                return sso.begin_sign_in(request, connection, email=email, next_url=next_url)
            form.add_error(
                "email",
                f"No organisation signs in with single sign-on for {sso.email_domain(email) or 'these'} addresses. "
                "Sign in with your password instead.",
            )
        return render(request, "identity/sso_start.html", {"form": form, "next_url": next_url}, status=400)
    form = SSOStartForm(initial={"email": request.GET.get("email", "")[:254]})
    return render(request, "identity/sso_start.html", {"form": form, "next_url": next_url})


def callback(request, provider_id: str):
    """Where the tenant's IdP sends the browser back with the code (the registered redirect URI)."""
    connection = sso.connection_for_provider_id(provider_id)
    if connection is None:
        raise Http404("No such single sign-on")
    view = TenantSSOCallbackView.adapter_view(TenantOIDCAdapter(request, provider_id))
    try:
        return view(request)
    except SocialApp.DoesNotExist:
        # Switched off while the person was at their IdP.
        message = f"Single sign-on for {connection.tenant.name} is switched off. Sign in with your password."
        return render(request, "identity/sso_error.html", {"tenant": connection.tenant, "message": message}, status=403)

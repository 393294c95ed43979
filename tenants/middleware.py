"""Sets the tenant context for browser requests under /t/<slug>/ and always resets it."""

from __future__ import annotations

import re

from django.contrib.auth.views import redirect_to_login
from django.http import Http404
from django.shortcuts import render

from tenants.context import tenant_context, user_context
from tenants.identity import sso
from tenants.identity.mfa import mfa_setup_required, mfa_setup_response
from tenants.models import Membership, Tenant
from tenants.roles import Role

TENANT_PATH = re.compile(r"^/t/(?P<slug>[^/]+)/")


class TenantMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.tenant = None
        request.membership = None
        user = request.user
        user_id = user.pk if user.is_authenticated else None
        match = TENANT_PATH.match(request.path_info)
        if match is None:
            with user_context(user_id):
                return self.get_response(request)

        if not user.is_authenticated:
            # Same answer for every slug, existing or not: nothing is revealed.
            return redirect_to_login(request.get_full_path())
        tenant = Tenant.by_slug(match["slug"])
        if tenant is None:
            raise Http404("No such tenant")
        with tenant_context(tenant, user_id=user_id):
            membership = Membership.objects.filter(user_id=user_id).first()
            if membership is None:
                # Not a member: indistinguishable from a tenant that does not exist.
                raise Http404("No such tenant")
            if not tenant.is_active:
                # Members stay signed in (tenants/sessions.py) and see why, every time.
                context = {
                    "tenant": tenant,
                    "runs_tenant": membership.role in (Role.OWNER, Role.ADMIN),
                    "role_label": membership.get_role_display().lower(),
                }
                return render(request, "tenants/suspended.html", context, status=403)
            connection = sso.sso_required_to_enter(request, user, tenant)
            if connection is not None:
                # Signed in with a password (allowed for the account's other organisations):
                # this tenant requires its own IdP for the address.
                context = {"tenant": tenant, "email": user.email, "next_url": request.get_full_path()}
                return render(request, "tenants/sso_required.html", context, status=403)
            if mfa_setup_required(user, tenant):
                return mfa_setup_response(request, tenant)
            membership.tenant = tenant
            request.tenant = tenant
            request.membership = membership
            return self.get_response(request)

"""Two-factor authentication: allauth.mfa's adapter, and the tenant rule
"members must use two-factor authentication" (Tenant.require_mfa).

allauth does the rest: setting up an authenticator app and recovery codes
under /accounts/2fa/, and asking for a code at sign-in once a user has one.
"""

from __future__ import annotations

import base64
import hashlib

from allauth.mfa.adapter import DefaultMFAAdapter
from allauth.mfa.models import Authenticator
from cryptography.fernet import Fernet
from django.conf import settings
from django.contrib import messages
from django.http import HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django_htmx.http import HttpResponseClientRedirect

from tenants.context import user_context
from tenants.models import Membership, Tenant, TenantStatus

MFA_REQUIRED_REASON = "mfa_required"


def has_totp(user) -> bool:
    """The user has an authenticator app (what a tenant's requirement asks for)."""
    if not user.is_authenticated:
        return False
    return Authenticator.objects.filter(user_id=user.pk, type=Authenticator.Type.TOTP).exists()


def mfa_setup_required(user, tenant: Tenant) -> bool:
    """True when `tenant` requires two-factor and `user` has no authenticator app yet."""
    return tenant.require_mfa and not has_totp(user)


# Where a member sent to set up two-factor was going; the setup pages offer to continue there.
NEXT_SESSION_KEY = "tenant_portal.mfa_next"


def _wants_json(request) -> bool:
    accept = request.META.get("HTTP_ACCEPT", "")
    return "text/html" not in accept and ("json" in accept or "event-stream" in accept)


def mfa_setup_response(request, tenant: Tenant) -> HttpResponse:
    """The answer to a member of `tenant` who must set up two-factor first.

    Pages: a redirect to allauth's authenticator-app setup, with a message.
    Scripts asking for JSON (and the REST API, see portal.api): 403 problem
    JSON with reason "mfa_required".
    """
    detail = f"{tenant.name} requires two-factor authentication. Set up an authenticator app to continue."
    if _wants_json(request):
        from portal.api import problem_response

        return problem_response(403, detail=detail, reason=MFA_REQUIRED_REASON)
    if request.method == "GET":
        request.session[NEXT_SESSION_KEY] = request.get_full_path()
    messages.warning(request, detail)
    url = reverse("mfa_activate_totp")
    if getattr(request, "htmx", False):
        return HttpResponseClientRedirect(url)
    return HttpResponseRedirect(url)


def continue_url(request) -> str | None:
    """The tenant page a member was on before being sent to set up two-factor."""
    url = request.session.get(NEXT_SESSION_KEY)
    if url and url_has_allowed_host_and_scheme(url, allowed_hosts={request.get_host()}):
        return url
    return None


def tenants_requiring_mfa(user) -> list[Tenant]:
    """The active tenants of `user` that require two-factor authentication."""
    with user_context(user.pk):
        memberships = Membership.of_user(user).filter(tenant__require_mfa=True, tenant__status=TenantStatus.ACTIVE)
        return [m.tenant for m in memberships.order_by("tenant__name")]


def users_with_totp(user_ids) -> set[int]:
    return set(
        Authenticator.objects.filter(user_id__in=list(user_ids), type=Authenticator.Type.TOTP).values_list(
            "user_id", flat=True
        )
    )


def _fernet() -> Fernet:
    digest = hashlib.sha256(f"mfa-secrets:{settings.SECRET_KEY}".encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


class MFAAdapter(DefaultMFAAdapter):
    error_messages = {
        **DefaultMFAAdapter.error_messages,
        "cannot_delete_authenticator": (
            "An organisation you belong to requires two-factor authentication, so it cannot be turned off."
        ),
    }

    # TOTP seeds and the recovery-code seed are stored encrypted under a key derived
    # from SECRET_KEY (as the token signing keys are): a copy of the database alone
    # cannot produce anyone's codes. Rotating SECRET_KEY means setting 2FA up again.
    def encrypt(self, text: str) -> str:
        return _fernet().encrypt(text.encode()).decode()

    def decrypt(self, encrypted_text: str) -> str:
        return _fernet().decrypt(encrypted_text.encode()).decode()

    def can_delete_authenticator(self, authenticator: Authenticator) -> bool:
        if authenticator.type != Authenticator.Type.TOTP:
            return True
        return not tenants_requiring_mfa(authenticator.user)

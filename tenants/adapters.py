from __future__ import annotations

import logging

from allauth.account.adapter import DefaultAccountAdapter
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.core.internal.datakit import parse_bool_safely
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from allauth.socialaccount.providers.base import AuthError, AuthProcess
from allauth.socialaccount.providers.openid_connect.provider import _pick_data
from django.core.exceptions import ValidationError
from django.shortcuts import render

from tenants.audit import client_ip
from tenants.identity import sso, sso_http
from tenants.identity.sso_provider import is_tenant_app

logger = logging.getLogger(__name__)


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request) -> bool:
        # People join a tenant by invitation (tenants.views.invitation_accept);
        # operators onboard tenants. There is no anonymous self-service signup.
        # (A tenant's IdP may create accounts: SocialAccountAdapter.is_open_for_signup.)
        return False

    def pre_authenticate(self, request, **credentials) -> None:
        # Before the password is even looked at: with SSO enforced for the domain
        # the answer is the same whether the password is right or wrong. An account
        # that also belongs to an organisation without the requirement keeps its
        # password for that one; the requiring tenant stays closed to the session
        # (TenantMiddleware, sso.sso_required_to_enter).
        email = credentials.get("email") or ""
        if isinstance(email, str) and sso.password_refused_connection(email) is not None:
            raise ValidationError(sso.enforced_message(email), code="sso_required")
        super().pre_authenticate(request, **credentials)


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    """Sign-in through a tenant's own identity provider (tenants/identity/sso.py).

    The IdP is trusted for addresses of the domains its tenant claims and for
    nothing else; it may create accounts (just-in-time) and make them members of
    its tenant, never of another.
    """

    def get_requests_session(self):
        # Every call to an IdP (discovery, JWKS, token, userinfo) goes through allauth's
        # session: it reaches public addresses only (tenants/identity/sso_http.py).
        from allauth.socialaccount import app_settings

        return sso_http.session(timeout=app_settings.REQUESTS_TIMEOUT)

    def list_providers(self, request):
        # Tenant IdPs are reached through the email-domain step, never listed
        # (a list would name every tenant that has SSO).
        return [p for p in super().list_providers(request) if not is_tenant_app(getattr(p, "app", None))]

    def pre_social_login(self, request, sociallogin) -> None:
        connection = sso.connection_for_provider_id(sociallogin.account.provider)
        if connection is None:
            return
        try:
            if not getattr(sociallogin, "tenant_sso_verified", False):
                raise sso.SSORefused("This sign-in did not come through the portal's single sign-on checks.")
            if sociallogin.state.get("process", AuthProcess.LOGIN) != AuthProcess.LOGIN:
                raise sso.SSORefused("An organisation's single sign-on can only be used to sign in.")
            email, verified = _asserted_email(sociallogin)
            if sociallogin.is_existing:
                sso.check_link_issuer(connection, sociallogin.account.extra_data)
                user = sociallogin.user
            else:
                accounts = sso.accounts_with_email(email) if email else []
                if len(accounts) > 1:
                    raise sso.SSORefused(f"Several accounts use {email}; ask support to merge them first.")
                user = accounts[0] if accounts else None
            sso.admit(connection, email=email, email_verified=verified, existing_user=user)
            if not sociallogin.is_existing and user is None:
                if sso.unproven_account_with_email(email) is not None:
                    # Linking would hand this identity to whoever typed the address in; a
                    # second account cannot have it either (one account per address).
                    raise sso.SSORefused(
                        f"An account already uses {email} but never confirmed that address, so single "
                        "sign-on cannot use it. Sign in with your password and confirm the address, or ask support."
                    )
                # The IdP just proved the address: it gets an account of its own (allauth's
                # sign-up would otherwise stop at the unconfirmed copies).
                sso.drop_unproven_claims(email)
            if not sociallogin.is_existing and user is not None:
                if not sso.may_link_existing_user(connection, user):
                    raise sso.SSORefused(sso.not_linked_message(connection, email))
                sociallogin.connect(request, user)
                sso.record_account_linked(connection, user, subject=sociallogin.account.uid, ip=client_ip(request))
            if sociallogin.is_existing:
                sso.provision_membership(connection, sociallogin.user, email=email, ip=client_ip(request))
        except sso.SSORefused as refusal:
            logger.info("SSO sign-in through %s refused: %s", connection.provider_id, refusal.message)
            raise ImmediateHttpResponse(_error_page(request, connection, refusal.message, refusal.status))

    def is_open_for_signup(self, request, sociallogin) -> bool:
        connection = sso.connection_for_provider_id(sociallogin.account.provider)
        if connection is None or not getattr(sociallogin, "tenant_sso_verified", False):
            return False
        email, verified = _asserted_email(sociallogin)
        try:
            sso.admit(connection, email=email, email_verified=verified, existing_user=None)
        except sso.SSORefused:
            return False
        return True

    def populate_user(self, request, sociallogin, data):
        user = super().populate_user(request, sociallogin, data)
        user.email = (user.email or "").strip().lower()
        name = data.get("name") or " ".join(filter(None, [data.get("first_name"), data.get("last_name")]))
        user.full_name = (name or "").strip()[:150]
        return user

    def save_user(self, request, sociallogin, form=None):
        connection = sso.connection_for_provider_id(sociallogin.account.provider)
        if connection is not None and form is not None:
            # allauth's sign-up form would let the person type another address than
            # the one the IdP asserted; tenant SSO creates accounts automatically or not at all.
            message = "This account cannot be created here. Sign in through single sign-on again."
            raise ImmediateHttpResponse(_error_page(request, connection, message, 403))
        user = super().save_user(request, sociallogin, form)
        if connection is not None:
            email, _ = _asserted_email(sociallogin)
            sso.provision_membership(connection, user, email=email, ip=client_ip(request))
        return user

    def on_authentication_error(self, request, provider, error=None, exception=None, extra_context=None) -> None:
        connection = sso_connection_of_provider(provider)
        if connection is None or error == AuthError.CANCELLED:
            return super().on_authentication_error(request, provider, error, exception, extra_context)
        logger.warning("SSO sign-in through %s failed: %s (%r)", connection.provider_id, error, exception)
        message = (
            f"Signing in through {connection.tenant.name}'s identity provider did not work. "
            "Try again; if it keeps failing, ask your administrator to check the single sign-on settings."
        )
        raise ImmediateHttpResponse(_error_page(request, connection, message, 401))


def sso_connection_of_provider(provider) -> sso.SSOConnection | None:
    app = getattr(provider, "app", None)
    if app is None or app.provider != sso.PROVIDER:
        return None
    return sso.connection_for_provider_id(app.provider_id)


def _asserted_email(sociallogin) -> tuple[str, bool | None]:
    """The address the IdP asserted and what it said about its verification (None: nothing)."""
    data = _pick_data(sociallogin.account.extra_data or {})
    email = data.get("email") if isinstance(data.get("email"), str) else ""
    raw_verified = data.get("email_verified")
    verified = None if raw_verified is None else parse_bool_safely(raw_verified)
    return email.strip().lower(), verified


def _error_page(request, connection, message: str, status: int):
    return render(request, "identity/sso_error.html", {"tenant": connection.tenant, "message": message}, status=status)

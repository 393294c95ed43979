"""Django admin for staff. Tenant-owned models, tenants and tiers are read-only here
(changes go through the operator console and its services, which audit them) and
listed across tenants inside all_tenants(), which PortalAdminSite sets for every
admin view."""

from __future__ import annotations

import functools

# allauth registers its admin pages on import; this module replaces some (see the end).
from allauth.account.admin import EmailAddressAdmin as AllauthEmailAddressAdmin
from allauth.account.models import EmailAddress
from allauth.mfa.admin import AuthenticatorAdmin as AllauthAuthenticatorAdmin
from allauth.mfa.models import Authenticator
from allauth.socialaccount.admin import SocialAccountAdmin as AllauthSocialAccountAdmin
from allauth.socialaccount.admin import SocialAppAdmin as AllauthSocialAppAdmin
from allauth.socialaccount.admin import SocialTokenAdmin as AllauthSocialTokenAdmin
from allauth.socialaccount.models import SocialAccount, SocialApp, SocialToken
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.contrib.auth.admin import GroupAdmin as BaseGroupAdmin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import models
from django.urls import reverse
from django.utils.html import format_html

from tenants.audit import client_ip
from tenants.context import all_tenants
from tenants.models import AuditLog, Invitation, Membership, Tenant, Tier, User

_original_admin_view = admin.AdminSite.admin_view


def _admin_view_across_tenants(self, view, cacheable=False):
    wrapped = _original_admin_view(self, view, cacheable)

    @functools.wraps(wrapped)
    def inner(request, *args, **kwargs):
        with all_tenants("django admin"):
            return wrapped(request, *args, **kwargs)

    return inner


# The default site is what `admin.site.urls` serves; wrapping its view factory
# covers every admin page, including ones other apps register.
admin.site.admin_view = _admin_view_across_tenants.__get__(admin.site)


class NoWrites(admin.ModelAdmin):
    """The admin may look, never write: its saves would skip the services and their audit."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyAcrossTenants(NoWrites):
    def get_queryset(self, request):
        return self.model.unscoped.all()

    # Every tenant's rows, as the operator console shows them: the read is audited the same way.
    def changelist_view(self, request, extra_context=None):
        return self._audited(request, super().changelist_view(request, extra_context))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        return self._audited(request, super().change_view(request, object_id, form_url, extra_context))

    def _audited(self, request, response):
        from portal.operator.services import record_read

        def record(_response=None):
            if response.status_code == 200:
                record_read(request.user, "django_admin", ip=client_ip(request))

        # After rendering, so that the audit log's own list does not show this visit.
        if hasattr(response, "add_post_render_callback"):
            response.add_post_render_callback(record)
        else:
            record()
        return response


def _unproven_elsewhere(form) -> str:
    from portal.operator import services as operator_services

    email = form.cleaned_data["email"].strip().lower()
    if operator_services.address_taken_by_another_account(form.instance, email):
        raise ValidationError("Another account has proven this address; it cannot belong to two accounts.")
    return email


class OperatorUserChangeForm(UserChangeForm):
    clean_email = _unproven_elsewhere


class OperatorUserCreationForm(AdminUserCreationForm):
    clean_email = _unproven_elsewhere


def _audit_value(value):
    """A field's value as the audit shows it: groups by name, permissions as app.codename."""
    if isinstance(value, models.QuerySet | list | tuple):
        return sorted(_audit_value(item) for item in value)
    if isinstance(value, Group):
        return value.name
    if hasattr(value, "codename"):  # a Permission
        return f"{value.content_type.app_label}.{value.codename}"
    return value


def changed_fields(form, fields) -> tuple[dict, dict]:
    """before/after of the `fields` an admin form changed (never the password: not listed)."""
    changed = [name for name in fields if name in form.changed_data]
    before = {name: _audit_value(form.initial.get(name)) for name in changed if name in form.initial}
    after = {name: _audit_value(form.cleaned_data.get(name)) for name in changed}
    return before, after


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    """Operators edit accounts here. Every save is audited (user.changed_by_operator), and an
    address the operator sets replaces the ones allauth knows for the account and removes its
    SSO links (named in the audit entry)."""

    form = OperatorUserChangeForm
    add_form = OperatorUserCreationForm
    ordering = ["email"]
    list_display = ["email", "full_name", "is_staff", "is_active", "date_joined"]
    search_fields = ["email", "full_name"]
    fieldsets = (
        (None, {"fields": ("email", "password", "full_name")}),
        ("Access", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)

    def save_model(self, request, obj, form, change):
        from portal.operator import services as operator_services

        super().save_model(request, obj, form, change)
        if not change or "email" in form.changed_data:
            operator_services.replace_email_addresses(obj, obj.email)
        # Kept on the form (one request's), not on this admin (shared by every request).
        form.sso_links_removed = []
        if change and form.initial.get("email", "").strip().lower() != obj.email.lower():
            # The links are the old address's holder at their IdP: they must not follow the account.
            form.sso_links_removed = operator_services.remove_sso_links(obj)

    def save_related(self, request, form, formsets, change):
        from portal.operator import services as operator_services

        super().save_related(request, form, formsets, change)  # groups and permissions: saved now
        before, after = changed_fields(form, operator_services.ACCOUNT_FIELDS)
        operator_services.record_account_change(
            request.user,
            form.instance,
            before=before,
            after=after,
            created=not change,
            sso_links_removed=getattr(form, "sso_links_removed", []),
            ip=client_ip(request),
        )

    def user_change_password(self, request, id, form_url=""):
        """The admin's "set password" page: a password an operator sets is audited (that it was
        set, never what it is). Django redirects only once the new password is saved."""
        from portal.operator import services as operator_services

        response = super().user_change_password(request, id, form_url)
        if request.method == "POST" and response.status_code == 302:
            user = self.get_object(request, unquote(id))
            if user is not None:
                # Django 5.1's form may also switch password sign-in off for the account.
                what = "set by an operator" if user.has_usable_password() else "disabled by an operator"
                operator_services.record_account_change(
                    request.user, user, before={}, after={"password": what}, ip=client_ip(request)
                )
        return response


admin.site.unregister(Group)


@admin.register(Group)
class GroupAdmin(BaseGroupAdmin):
    """A group's permissions are every member's: changes to them are audited."""

    def save_related(self, request, form, formsets, change):
        from portal.operator import services as operator_services

        super().save_related(request, form, formsets, change)
        before, after = changed_fields(form, ("name", "permissions"))
        operator_services.record_group_change(
            request.user, form.instance, before=before, after=after, ip=client_ip(request)
        )


class EditInTheConsole(NoWrites):
    """Read-only: an admin save would change a tenant's or tier's settings with no audit
    entry (ARCHITECTURE.md §3). The page links to the console page that edits it, audited."""

    console_label = "Edit in the operator console"
    console_view = ""  # the console page that edits the object, reversed with its slug

    @admin.display(description="Operator console")
    def console_link(self, obj):
        if obj is None or obj.pk is None:
            return "—"
        return format_html(
            '<a href="{}">{}</a>', reverse(self.console_view, kwargs={"slug": obj.slug}), self.console_label
        )

    def get_readonly_fields(self, request, obj=None):
        return ["console_link", *(f.name for f in self.model._meta.fields)]


@admin.register(Tier)
class TierAdmin(EditInTheConsole):
    list_display = ["name", "slug", "monthly_price", "included_tokens", "requests_per_minute", "celery_queue"]
    console_view = "operator:tier_edit"


@admin.register(Tenant)
class TenantAdmin(EditInTheConsole):
    list_display = ["name", "slug", "tier", "deployment_model", "status", "region"]
    list_filter = ["status", "deployment_model", "tier"]
    search_fields = ["name", "slug"]
    console_view = "operator:tenant_detail"


@admin.register(Membership)
class MembershipAdmin(ReadOnlyAcrossTenants):
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["role"]


@admin.register(Invitation)
class InvitationAdmin(ReadOnlyAcrossTenants):
    list_display = ["email", "tenant", "role", "status", "expires_at"]
    exclude = ["nonce", "secret_hash"]


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAcrossTenants):
    list_display = ["created_at", "action", "actor_email", "tenant", "target_repr", "ip_address"]
    list_filter = ["action"]
    search_fields = ["action", "actor_email", "target_repr"]


# --- allauth's own pages: they bind an address, an IdP identity or a second factor to an
# account. An edit there would hand the account to whoever holds that address, identity or
# device, with no audit entry: operators look here and change accounts on the User page
# (whose address change replaces the account's addresses, audited). allauth's "mark as
# verified" action goes too: a verified address is what SSO links an IdP identity by.
# SocialApp rows are copies of the tenants' SSO connections (tenants/identity/sso.py keeps
# them in sync; the connections are edited, audited, on the tenant's SSO page), so they only
# look as well: an edit here would be overwritten, or point a tenant's sign-in elsewhere.


class EmailAddressAdmin(NoWrites, AllauthEmailAddressAdmin):
    actions = []


class SocialAccountAdmin(NoWrites, AllauthSocialAccountAdmin):
    pass


class SocialTokenAdmin(NoWrites, AllauthSocialTokenAdmin):
    pass


class SocialAppAdmin(NoWrites, AllauthSocialAppAdmin):
    pass


class AuthenticatorAdmin(NoWrites, AllauthAuthenticatorAdmin):
    pass


for _model, _admin in (
    (EmailAddress, EmailAddressAdmin),
    (SocialAccount, SocialAccountAdmin),
    (SocialToken, SocialTokenAdmin),
    (SocialApp, SocialAppAdmin),
    (Authenticator, AuthenticatorAdmin),
):
    admin.site.unregister(_model)
    admin.site.register(_model, _admin)

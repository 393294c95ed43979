"""Django admin for staff. Tenant-owned models are read-only here (changes go
through the services, which audit them) and listed across tenants inside
all_tenants(), which PortalAdminSite sets for every admin view."""

from __future__ import annotations

import functools

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

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


class ReadOnlyAcrossTenants(admin.ModelAdmin):
    def get_queryset(self, request):
        return self.model.unscoped.all()

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ["email"]
    list_display = ["email", "full_name", "is_staff", "is_active", "date_joined"]
    search_fields = ["email", "full_name"]
    fieldsets = (
        (None, {"fields": ("email", "password", "full_name")}),
        ("Access", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)


@admin.register(Tier)
class TierAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "monthly_price", "included_tokens", "requests_per_minute", "celery_queue"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "tier", "deployment_model", "status", "region"]
    list_filter = ["status", "deployment_model", "tier"]
    search_fields = ["name", "slug"]
    readonly_fields = ["status", "suspended_reason"]  # suspend through the operator console (audited)


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

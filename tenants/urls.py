from django.urls import include, path

from tenants import views
from tenants.identity import sso_views

app_name = "tenants"

# Mounted under /t/<tenant_slug>/; TenantMiddleware sets the tenant for these.
urlpatterns = [
    path("", views.overview, name="overview"),
    path("members/", views.members, name="members"),
    path("members/invite/", views.member_invite, name="member_invite"),
    path("members/<int:membership_id>/role/", views.member_change_role, name="member_change_role"),
    path("members/<int:membership_id>/remove/", views.member_remove, name="member_remove"),
    path("invitations/<int:invitation_id>/resend/", views.invitation_resend, name="invitation_resend"),
    path("invitations/<int:invitation_id>/revoke/", views.invitation_revoke, name="invitation_revoke"),
    path("audit/", views.audit_log, name="audit_log"),
    path("audit/export.csv", views.audit_export, name="audit_export"),
    # API clients, agent identities, sign-in security (names stay in this namespace).
    path("", include("tenants.identity.urls")),
    path("sso/", sso_views.settings_page, name="sso_settings"),
    path("sso/disable/", sso_views.disable, name="sso_disable"),
    path("sso/domains/verify/", sso_views.verify_domain, name="sso_verify_domain"),
]

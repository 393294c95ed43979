from django.urls import path

from portal.operator import views

app_name = "operator"

urlpatterns = [
    path("", views.tenants, name="tenants"),
    path("tenants/new/", views.tenant_create, name="tenant_create"),
    path("tenants/<slug:slug>/", views.tenant_detail, name="tenant_detail"),
    path("tenants/<slug:slug>/suspend/", views.tenant_suspend, name="tenant_suspend"),
    path("tenants/<slug:slug>/reactivate/", views.tenant_reactivate, name="tenant_reactivate"),
    path(
        "tenants/<slug:slug>/api-clients/<int:client_id>/revoke/",
        views.tenant_api_client_revoke,
        name="tenant_api_client_revoke",
    ),
    path("tenants/<slug:slug>/invitations/owner/", views.tenant_invite_owner, name="tenant_invite_owner"),
    path(
        "tenants/<slug:slug>/invitations/<int:invitation_id>/resend/",
        views.tenant_invitation_resend,
        name="tenant_invitation_resend",
    ),
    path(
        "tenants/<slug:slug>/invitations/<int:invitation_id>/revoke/",
        views.tenant_invitation_revoke,
        name="tenant_invitation_revoke",
    ),
    path("tenants/<slug:slug>/sso/disable/", views.tenant_sso_disable, name="tenant_sso_disable"),
    path("tenants/<slug:slug>/sso/verify-domain/", views.tenant_sso_verify_domain, name="tenant_sso_verify_domain"),
    path("tiers/", views.tiers, name="tiers"),
    path("tiers/new/", views.tier_edit, name="tier_create"),
    path("tiers/<slug:slug>/", views.tier_edit, name="tier_edit"),
    path("audit/", views.audit_log, name="audit_log"),
    path("audit/export.csv", views.audit_export, name="audit_export"),
    path("agent-identities/", views.agent_identities, name="agent_identities"),
    path("agent-identities/new/", views.agent_identity_create, name="agent_identity_create"),
    path("agent-identities/<int:agent_id>/rotate/", views.agent_identity_rotate, name="agent_identity_rotate"),
    path("agent-identities/<int:agent_id>/disable/", views.agent_identity_disable, name="agent_identity_disable"),
    path("agent-identities/<int:agent_id>/enable/", views.agent_identity_enable, name="agent_identity_enable"),
]

# Billing: revenue, cost and margin per tenant; invoices (portal/operator/billing_views.py).
from portal.operator import billing_views  # noqa: E402

urlpatterns += [
    path("billing/", billing_views.billing_overview, name="billing"),
    path("billing/tenants/<slug:slug>/", billing_views.billing_tenant, name="billing_tenant"),
    path("billing/invoices/", billing_views.billing_invoices, name="billing_invoices"),
    path("billing/invoices/draft/", billing_views.billing_invoices_draft, name="billing_invoices_draft"),
    path(
        "billing/invoices/finalise-ready/",
        billing_views.billing_invoices_finalise_ready,
        name="billing_invoices_finalise_ready",
    ),
    path("billing/invoices/export/", billing_views.billing_invoices_export, name="billing_invoices_export"),
    path("billing/invoices/<int:invoice_id>/", billing_views.billing_invoice, name="billing_invoice"),
    path(
        "billing/invoices/<int:invoice_id>/finalise/",
        billing_views.billing_invoice_finalise,
        name="billing_invoice_finalise",
    ),
    path(
        "billing/invoices/<int:invoice_id>/export/",
        billing_views.billing_invoice_export,
        name="billing_invoice_export",
    ),
]

# Load: tenants ranked by their use of the shared capacity (portal/operator/load_views.py).
from portal.operator import load_views  # noqa: E402

urlpatterns += [
    path("load/", load_views.load_overview, name="load"),
    path("load/queues/", load_views.load_queues, name="load_queues"),
]

# Each staff member's own operator API tokens (portal/operator/token_views.py).
from portal.operator import token_views  # noqa: E402

urlpatterns += [
    path("api-tokens/", token_views.api_tokens, name="api_tokens"),
    path("api-tokens/new/", token_views.api_token_create, name="api_token_create"),
    path("api-tokens/<int:token_id>/revoke/", token_views.api_token_revoke, name="api_token_revoke"),
]

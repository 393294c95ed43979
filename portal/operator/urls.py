from django.urls import path

from portal.operator import views

app_name = "operator"

urlpatterns = [
    path("", views.tenants, name="tenants"),
    path("tenants/new/", views.tenant_create, name="tenant_create"),
    path("tenants/<slug:slug>/", views.tenant_detail, name="tenant_detail"),
    path("tenants/<slug:slug>/suspend/", views.tenant_suspend, name="tenant_suspend"),
    path("tenants/<slug:slug>/reactivate/", views.tenant_reactivate, name="tenant_reactivate"),
    path("tiers/", views.tiers, name="tiers"),
    path("tiers/new/", views.tier_edit, name="tier_create"),
    path("tiers/<slug:slug>/", views.tier_edit, name="tier_edit"),
    path("audit/", views.audit_log, name="audit_log"),
]

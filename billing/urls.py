"""Tenant billing pages under /t/<slug>/billing/ (limits by billing.views_limits;
usage dashboards and invoices by billing.views). Additive: each side appends its routes."""

from django.urls import path  # noqa: F401

app_name = "billing"

urlpatterns: list = []

# Usage dashboard, CSV export, raw-event drill-down and invoices (billing.views).
from billing import views as usage_views  # noqa: E402

urlpatterns += [
    path("", usage_views.dashboard, name="dashboard"),
    path("export.csv", usage_views.export_csv, name="export_csv"),
    path("events/", usage_views.events, name="events"),
    path("invoices/", usage_views.invoices, name="invoices"),
    path("invoices/<int:invoice_id>/", usage_views.invoice_detail, name="invoice"),
    path("invoices/<int:invoice_id>/export/", usage_views.invoice_export, name="invoice_export"),
]

# Limits and budget: what tenant admins set (billing.views_limits).
from billing import views_limits  # noqa: E402

urlpatterns += [
    path("limits/", views_limits.limits_page, name="limits"),
    path("limits/budget/", views_limits.budget_save, name="budget_save"),
    path("limits/people/<str:membership_id>/", views_limits.user_limit_save, name="user_limit_save"),
]

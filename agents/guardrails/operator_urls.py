from django.urls import path

from agents.guardrails import views

app_name = "guardrails_operator"

# Mounted under /operator/guardrails/: staff only (operator_view), across tenants.
urlpatterns = [
    path("", views.operator_overview, name="overview"),
    path("tiers/<slug:slug>/", views.operator_tier_policy, name="tier_policy"),
]

from django.urls import path

from agents.guardrails import views

app_name = "guardrails"

# Mounted under /t/<tenant_slug>/guardrails/; TenantMiddleware sets the tenant for these.
urlpatterns = [
    path("", views.overview, name="overview"),
    path("policy/", views.policy_save, name="policy_save"),
    path("try/", views.try_it, name="try_it"),
    path("events/<int:event_id>/false-positive/", views.event_false_positive, name="event_false_positive"),
]

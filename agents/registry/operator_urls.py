from django.urls import path

from agents.registry import views

app_name = "registry_operator"

# Mounted under /operator/agents/: staff only (operator_view).
urlpatterns = [
    path("", views.operator_agents, name="agents"),
    path("new/", views.operator_agent_new, name="agent_new"),
    path("<int:agent_id>/", views.operator_agent, name="agent"),
    path("<int:agent_id>/versions/new/", views.operator_version_new, name="version_new"),
    path("<int:agent_id>/versions/<int:number>/submit/", views.operator_version_submit, name="version_submit"),
    path("<int:agent_id>/versions/<int:number>/approve/", views.operator_version_approve, name="version_approve"),
    path("<int:agent_id>/versions/<int:number>/reject/", views.operator_version_reject, name="version_reject"),
    path(
        "<int:agent_id>/versions/<int:number>/roll-back/",
        views.operator_version_roll_back,
        name="version_roll_back",
    ),
]

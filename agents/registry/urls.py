from django.urls import path

from agents.registry import views

app_name = "registry"

# Mounted under /t/<tenant_slug>/catalogue/ (/t/<slug>/agents/ is the agent identities screen).
urlpatterns = [
    path("", views.catalogue, name="catalogue"),
    path("own/new/", views.own_agent_new, name="agent_new"),
    path("own/<int:agent_id>/", views.own_agent, name="agent"),
    path("own/<int:agent_id>/versions/new/", views.own_version_new, name="version_new"),
    path("own/<int:agent_id>/versions/<int:number>/submit/", views.own_version_submit, name="version_submit"),
    path("own/<int:agent_id>/versions/<int:number>/approve/", views.own_version_approve, name="version_approve"),
    path("own/<int:agent_id>/versions/<int:number>/reject/", views.own_version_reject, name="version_reject"),
    path("own/<int:agent_id>/versions/<int:number>/roll-back/", views.own_version_roll_back, name="version_roll_back"),
]

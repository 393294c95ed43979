from django.urls import path

from agents.tools import views

app_name = "tools"

# Mounted under /t/<tenant_slug>/tools/.
urlpatterns = [
    path("", views.home, name="home"),
    path("agents/<int:agent_id>/", views.agent_tools, name="agent_tools"),
]

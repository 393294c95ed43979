from django.urls import path

from agents.skills import views

app_name = "skills"

# Mounted under /t/<tenant_slug>/skills/.
urlpatterns = [
    path("", views.home, name="home"),
    path("new/", views.skill_create, name="skill_create"),
    path("<int:skill_id>/", views.skill_edit, name="skill_edit"),
    path("agents/<int:agent_id>/", views.agent_skills, name="agent_skills"),
]

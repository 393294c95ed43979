from django.urls import path

from agents.skills import views

app_name = "skills_operator"

# Mounted under /operator/skills/: staff only (operator_view).
urlpatterns = [
    path("", views.operator_skills, name="skills"),
    path("new/", views.operator_skill_create, name="skill_create"),
    path("<slug:key>/", views.operator_skill_edit, name="skill_edit"),
]

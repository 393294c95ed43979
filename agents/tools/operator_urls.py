from django.urls import path

from agents.tools import views

app_name = "tools_operator"

# Mounted under /operator/tools/: staff only (operator_view).
urlpatterns = [
    path("", views.operator_tools, name="tools"),
    path("new/", views.operator_tool_create, name="tool_create"),
    path("<slug:key>/", views.operator_tool_edit, name="tool_edit"),
]

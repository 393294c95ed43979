from django.urls import path

from agents.memory import views

app_name = "memory"

# Mounted under /t/<tenant_slug>/memory/.
urlpatterns = [
    path("", views.home, name="home"),
    path("<int:record_id>/delete/", views.delete, name="delete"),
    path("members/<int:membership_id>/clear/", views.clear, name="clear"),
    path("shared/", views.shared_add, name="shared_add"),
    path("shared/<int:record_id>/delete/", views.shared_delete, name="shared_delete"),
]

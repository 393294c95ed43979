from django.urls import path

from agents import views

app_name = "agents"

# Mounted under /t/<tenant_slug>/chat/.
urlpatterns = [
    path("", views.chat_home, name="chat"),
    path("new/", views.conversation_new, name="conversation_new"),
    path("<int:conversation_id>/", views.conversation_detail, name="conversation"),
    path("<int:conversation_id>/messages/", views.message_post, name="message_post"),
    path("<int:conversation_id>/rename/", views.conversation_rename, name="conversation_rename"),
    path("<int:conversation_id>/delete/", views.conversation_delete, name="conversation_delete"),
    path("turns/<uuid:invocation_id>/events/", views.turn_events, name="turn_events"),
    path("turns/<uuid:invocation_id>/cancel/", views.turn_cancel, name="turn_cancel"),
    path("turns/<uuid:invocation_id>/retry/", views.turn_retry, name="turn_retry"),
    path("messages/<int:message_id>/", views.message_fragment, name="message_fragment"),
    path("messages/<int:message_id>/feedback/", views.message_feedback, name="message_feedback"),
]

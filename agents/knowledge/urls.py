from django.urls import path

from agents.knowledge import views

app_name = "knowledge"

# Mounted under /t/<tenant_slug>/knowledge/.
urlpatterns = [
    path("", views.home, name="home"),
    path("new/", views.kb_create, name="create"),
    path("<int:kb_id>/", views.kb_detail, name="detail"),
    path("<int:kb_id>/edit/", views.kb_edit, name="edit"),
    path("<int:kb_id>/delete/", views.kb_delete, name="delete"),
    path("<int:kb_id>/upload/", views.document_upload, name="upload"),
    path("<int:kb_id>/documents/", views.documents_fragment, name="documents"),
    path("<int:kb_id>/search/", views.kb_search, name="search"),
    path("agents/", views.agent_knowledge, name="agent_knowledge"),
    path("documents/<int:document_id>/", views.document_detail, name="document"),
    path("documents/<int:document_id>/delete/", views.document_delete, name="document_delete"),
    path("documents/<int:document_id>/reindex/", views.document_reindex, name="document_reindex"),
    path("passages/<int:chunk_id>/", views.passage, name="passage"),
]

from django.urls import path, register_converter

from agents.memory import views


class RecordIdConverter:
    """A memory record's id: the portal table's pk, or an AgentCore memoryRecordId
    (``mem-`` and 36-46 characters) for a tenant bound to AgentCore Memory."""

    regex = r"[0-9]+|mem-[a-zA-Z0-9_-]{36,46}"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value) -> str:
        return str(value)


register_converter(RecordIdConverter, "memory_record")

app_name = "memory"

# Mounted under /t/<tenant_slug>/memory/.
urlpatterns = [
    path("", views.home, name="home"),
    path("<memory_record:record_id>/delete/", views.delete, name="delete"),
    path("members/<int:membership_id>/clear/", views.clear, name="clear"),
    path("shared/", views.shared_add, name="shared_add"),
    path("shared/<memory_record:record_id>/delete/", views.shared_delete, name="shared_delete"),
]

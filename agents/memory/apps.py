from django.apps import AppConfig


class MemoryConfig(AppConfig):
    name = "agents.memory"
    label = "memory"
    verbose_name = "Agent memory"
    default_auto_field = "django.db.models.BigAutoField"

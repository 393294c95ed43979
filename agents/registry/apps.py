from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "agents.registry"
    label = "registry"
    verbose_name = "Agent registry"
    default_auto_field = "django.db.models.BigAutoField"

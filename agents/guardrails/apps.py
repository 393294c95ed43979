from django.apps import AppConfig


class GuardrailsConfig(AppConfig):
    name = "agents.guardrails"
    label = "guardrails"
    verbose_name = "Guardrails"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from agents.guardrails import signals  # noqa: F401  (connects the cache invalidation)

from django.apps import AppConfig


class SkillsConfig(AppConfig):
    name = "agents.skills"
    label = "skills"
    verbose_name = "Skills"
    default_auto_field = "django.db.models.BigAutoField"

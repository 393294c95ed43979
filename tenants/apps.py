from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Tenancy"

    def ready(self):
        from tenants import checks, rls, signals  # noqa: F401  (the system check, post_migrate and save hooks)

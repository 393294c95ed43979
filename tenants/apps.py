from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Tenancy"

    def ready(self):
        from tenants import checks, rls  # noqa: F401  (registers the system check and post_migrate hook)

from django.apps import AppConfig


class PortalConfig(AppConfig):
    name = "portal"
    verbose_name = "Portal"

    def ready(self):
        from django.conf import settings

        from portal.celery import ensure_broker_folders

        # The embedded default keeps its SQLite file, broker folders and collected
        # static files under var/; make sure they exist before anything uses them.
        settings.STATIC_ROOT.mkdir(parents=True, exist_ok=True)
        ensure_broker_folders()

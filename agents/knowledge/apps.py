from django.apps import AppConfig


class KnowledgeConfig(AppConfig):
    name = "agents.knowledge"
    label = "knowledge"
    verbose_name = "Knowledge bases"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.db.backends.signals import connection_created

        from agents.knowledge import fts

        # The SQLite FTS triggers call knowledge_tenant_terms(); see agents/knowledge/fts.py.
        connection_created.connect(fts.register, dispatch_uid="knowledge_tenant_terms")

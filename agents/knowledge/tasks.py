"""Celery tasks of the knowledge room: ingesting one version of a document.

Arguments are ids; the task re-reads the document, claims the version with a
conditional update (a redelivered or duplicated task finds nothing to claim)
and stores any failure on the document. `acks_late` + reject on worker loss
(via @tenant_task) mean a killed worker's ingestion runs again.
"""

from __future__ import annotations

from agents.knowledge import services
from tenants.models import Tenant
from tenants.tasks import tenant_task

INGEST_SOFT_TIME_LIMIT = 300
INGEST_TIME_LIMIT = 360


@tenant_task(soft_time_limit=INGEST_SOFT_TIME_LIMIT, time_limit=INGEST_TIME_LIMIT)
def ingest_document(tenant: Tenant, document_id: int, version: int) -> str:
    return services.ingest_document(tenant, document_id, version)

"""Celery tasks of the knowledge room: ingesting one version of a document, and looking
again for other tenants' markers in documents when the set of tenants changes.

Arguments are ids; the task re-reads the document, claims the version with a
conditional update (a redelivered or duplicated task finds nothing to claim)
and stores any failure on the document. `acks_late` + reject on worker loss
(via @tenant_task) mean a killed worker's ingestion runs again.
"""

from __future__ import annotations

import logging

from celery import shared_task

from agents.knowledge import services
from tenants.models import Tenant
from tenants.tasks import tenant_task

log = logging.getLogger(__name__)

INGEST_SOFT_TIME_LIMIT = 300
INGEST_TIME_LIMIT = 360
RESCAN_SOFT_TIME_LIMIT = 120
RESCAN_TIME_LIMIT = 150


@tenant_task(soft_time_limit=INGEST_SOFT_TIME_LIMIT, time_limit=INGEST_TIME_LIMIT)
def ingest_document(tenant: Tenant, document_id: int, version: int) -> str:
    return services.ingest_document(tenant, document_id, version)


@tenant_task(soft_time_limit=RESCAN_SOFT_TIME_LIMIT, time_limit=RESCAN_TIME_LIMIT)
def rescan_document_markers(tenant: Tenant) -> int:
    """One batch of the tenant's documents with stale markers, in the tenant's context;
    the next batch is a task of its own (on the tenant's queue), so one large tenant
    neither holds a worker for long nor delays the others. Safe to run twice: a document
    rescanned already has the current fingerprint and is not read again."""
    done, more = services.rescan_document_markers(tenant)
    if more:
        rescan_document_markers.apply_async(args=[tenant.pk], queue=tenant.bindings.celery_queue)
    return done


@shared_task(name="agents.knowledge.tasks.rescan_stale_document_markers")
def rescan_stale_document_markers() -> int:
    """Start a rescan for each tenant whose documents' markers were found with an older set
    of tenants. Enqueued when a tenant or canary changes (agents.guardrails.signals) and
    run by Celery beat, which also covers documents indexed before markers were stored and
    a change whose task was lost. Reads across tenants only which tenants have stale
    documents; each tenant's documents are read by its own task, in its own context."""
    tenant_ids = services.stale_marker_tenants()
    for tenant in Tenant.objects.filter(pk__in=tenant_ids):
        rescan_document_markers.apply_async(args=[tenant.pk], queue=tenant.bindings.celery_queue)
    if tenant_ids:
        log.info("rescanning documents of %s tenants for other tenants' markers", len(tenant_ids))
    return len(tenant_ids)

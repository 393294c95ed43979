"""Cache invalidation: a saved policy, tier, tenant or canary makes the cached views stale.

A saved or deleted tenant or canary also starts the rescan of documents whose stored
other-tenant markers were found with the set of tenants before it (after commit).

Invalidation runs at once (this process sees its own write) and again after commit,
so a reader in another process cannot keep an old row it re-cached in between."""

from __future__ import annotations

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from agents.guardrails import services
from agents.guardrails.models import GuardrailPolicy, TenantCanary, TenantGuardrailOverride
from tenants.models import Tenant, Tier


@receiver([post_save, post_delete], sender=GuardrailPolicy)
@receiver([post_save, post_delete], sender=Tier)
def _tier_changed(sender, **kwargs):
    services.invalidate_all()
    transaction.on_commit(services.invalidate_all)


@receiver([post_save, post_delete], sender=TenantGuardrailOverride)
def _override_changed(sender, instance, **kwargs):
    tenant_id = instance.tenant_id
    services.invalidate_tenant(tenant_id)
    transaction.on_commit(lambda: services.invalidate_tenant(tenant_id))


@receiver([post_save, post_delete], sender=Tenant)
def _tenant_changed(sender, instance, **kwargs):
    tenant_id = instance.pk

    def invalidate():
        services.invalidate_tenant(tenant_id)
        services.invalidate_tenants_list()

    invalidate()
    transaction.on_commit(invalidate)
    transaction.on_commit(_rescan_documents)


@receiver([post_save, post_delete], sender=TenantCanary)
def _canary_changed(sender, **kwargs):
    services.invalidate_tenants_list()
    transaction.on_commit(services.invalidate_tenants_list)
    transaction.on_commit(_rescan_documents)


def _rescan_documents():
    """Documents store the other tenants' markers they hold, found with the set of tenants
    of their ingestion: a changed set makes some stale (agents.knowledge.tasks). The task
    looks for stale documents itself, so a save that changed no marker costs one query."""
    from agents.knowledge import tasks

    tasks.rescan_stale_document_markers.delay()

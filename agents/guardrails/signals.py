"""Cache invalidation: a saved policy, tier, tenant or canary makes the cached views stale.

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


@receiver([post_save, post_delete], sender=TenantCanary)
def _canary_changed(sender, **kwargs):
    services.invalidate_tenants_list()
    transaction.on_commit(services.invalidate_tenants_list)

"""Celery tasks of the tenancy core, and `@tenant_task`, the task-side way to set the tenant."""

from __future__ import annotations

import copy
import functools
import logging
import threading
import time

from celery import shared_task
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from tenants.context import tenant_context
from tenants.models import Tenant, Tier

log = logging.getLogger(__name__)

# A worker runs many tasks a second for the same few tenants; reading the tenant and its
# tier for each was a query and ~0.5 ms of ORM work per chat turn. Kept this long per
# process; a save in this process forgets it at once (signals below), one elsewhere (the
# operator suspending a tenant in the web process) is seen within TENANT_CACHE_SECONDS.
# What must take effect at once is checked where it matters, not from this copy: the
# turn's claim checks the tenant's status, and every token validation re-reads the tenant.
TENANT_CACHE_SECONDS = 5.0
_tenants: dict[int, tuple[float, Tenant]] = {}
_tenants_lock = threading.Lock()


def cached_tenant(tenant_id: int) -> Tenant | None:
    """The tenant with its tier, from this process's short cache or the database; each
    caller gets its own copy (a task may change attributes of its Tenant)."""
    now = time.monotonic()
    with _tenants_lock:
        hit = _tenants.get(tenant_id)
    if hit is None or now - hit[0] >= TENANT_CACHE_SECONDS:
        tenant = Tenant.objects.select_related("tier").filter(pk=tenant_id).first()
        if tenant is None:
            return None
        hit = (now, tenant)
        with _tenants_lock:
            _tenants[tenant_id] = hit
    return copy.copy(hit[1])


@receiver(post_save, sender=Tenant, dispatch_uid="tenants.tasks.forget_tenant_saved")
@receiver(post_delete, sender=Tenant, dispatch_uid="tenants.tasks.forget_tenant_deleted")
@receiver(post_save, sender=Tier, dispatch_uid="tenants.tasks.forget_tier_saved")
@receiver(post_delete, sender=Tier, dispatch_uid="tenants.tasks.forget_tier_deleted")
def forget_tenants(**kwargs) -> None:
    """Any tenant or tier written in this process: the next task reads them again."""
    with _tenants_lock:
        _tenants.clear()


def tenant_task(**task_options):
    """Declare a Celery task that runs inside its tenant's context.

    The task's first argument is the tenant id; the wrapped function receives the
    Tenant. The context is reset when the task returns or raises. A tenant that
    no longer exists makes the task a quiet no-op, as tasks may run late.
    """
    options = {"acks_late": True, "reject_on_worker_lost": True, **task_options}

    def decorator(fn):
        bound = options.get("bind", False)

        def call_in_tenant(task, tenant_id: int, args, kwargs):
            tenant = cached_tenant(tenant_id)
            if tenant is None:
                log.info("task %s: tenant %s is gone, nothing to do", fn.__name__, tenant_id)
                return None
            with tenant_context(tenant):
                return fn(task, tenant, *args, **kwargs) if bound else fn(tenant, *args, **kwargs)

        if bound:

            def run(self, tenant_id: int, *args, **kwargs):
                return call_in_tenant(self, tenant_id, args, kwargs)

        else:

            def run(tenant_id: int, *args, **kwargs):
                return call_in_tenant(None, tenant_id, args, kwargs)

        # Name and docs only: Celery checks call arguments against run(), not fn().
        functools.update_wrapper(run, fn, assigned=("__module__", "__name__", "__qualname__", "__doc__"), updated=())
        return shared_task(name=options.pop("name", f"{fn.__module__}.{fn.__name__}"), **options)(run)

    return decorator


@tenant_task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5)
def send_invitation_email(tenant: Tenant, invitation_id: int) -> bool:
    from tenants import services

    return services.deliver_invitation(tenant, invitation_id)

"""Celery tasks of the tenancy core, and `@tenant_task`, the task-side way to set the tenant."""

from __future__ import annotations

import functools
import logging

from celery import shared_task

from tenants.context import tenant_context
from tenants.models import Tenant

log = logging.getLogger(__name__)


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
            tenant = Tenant.objects.select_related("tier").filter(pk=tenant_id).first()
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

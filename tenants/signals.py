"""A user deactivated anywhere (the Django admin's user form, a shell, a service) stops
reading their tenants' streams promptly.

The stream's re-check (agents.views._turn_state) already refuses an inactive reader, but an
open stream only runs it when its tenant's access generation moves on, and a stream token
is signed over that generation. Services that change access call
agents.streaming.access_changed themselves; a deactivation is a plain save of the user
(the admin has no service to call), so it is caught here, at the model's save.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from tenants.context import user_context
from tenants.models import Membership, User


@receiver(post_save, sender=User, dispatch_uid="tenants.signals.streams_recheck_inactive_user")
def streams_recheck_inactive_user(
    sender, instance: User, created: bool, raw: bool, using: str, update_fields, **kwargs
):
    """Once a save of an inactive user commits, every tenant they belong to moves its access
    generation on. Any save that writes is_active=False counts, not only the one that turned
    it off (telling them apart would cost a query on every save of a user): saving an
    already inactive account again is rare and costs its tenants' open streams one re-check."""
    if created or raw or instance.is_active:
        return
    if update_fields is not None and "is_active" not in update_fields:
        return  # e.g. last_login: is_active was not written
    with user_context(instance.pk):  # row-level security lets a user's own memberships be read
        tenant_ids = list(Membership.of_user(instance).values_list("tenant_id", flat=True))
    if tenant_ids:
        transaction.on_commit(lambda: _access_changed(tenant_ids), using=using)


def _access_changed(tenant_ids: list[int]) -> None:
    from agents import streaming

    for tenant_id in tenant_ids:
        streaming.access_changed(tenant_id)

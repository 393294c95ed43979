"""The one way to own tenant data: `TenantOwnedModel`.

* `Model.objects` filters by the tenant in the context and **raises**
  `TenantNotSet` when there is none. There is no silent "all rows" fallback.
* `Model.unscoped` is the explicitly named cross-tenant manager. On PostgreSQL
  it still only sees what row-level security allows, which is nothing unless the
  caller is inside `all_tenants(reason)`.
* Saving fills `tenant` from the context and refuses to write a row for a
  tenant other than the one in the context.

Models in a tenant app that are not tenant-owned must say so by inheriting
`PlatformModel` (system check tenants.E001).
"""

from __future__ import annotations

from django.db import models

from tenants.context import TenantNotSet, current_scope


class TenantScopedQuerySet(models.QuerySet):
    pass


class TenantManager(models.Manager.from_queryset(TenantScopedQuerySet)):
    """Default manager of tenant-owned models: current tenant only, or raise."""

    def get_queryset(self):
        scope = current_scope()
        if scope.tenant_id is None:
            raise TenantNotSet(
                f"{self.model._meta.label}.objects needs a tenant in the context; "
                f"cross-tenant reads go through {self.model._meta.object_name}.unscoped inside all_tenants()."
            )
        return super().get_queryset().filter(tenant_id=scope.tenant_id)


class UnscopedManager(models.Manager):
    """Every tenant's rows. Use only where reading across tenants is the point."""


class PlatformModel(models.Model):
    """Marker: this model in a tenant app is platform data, not owned by a tenant."""

    class Meta:
        abstract = True


class TenantOwnedModel(models.Model):
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+", db_index=True)

    objects = TenantManager()
    unscoped = UnscopedManager()

    # Extra SQL OR-ed into the row-level security USING clause (reads only).
    rls_extra_using: str = ""

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        assign_tenant(self)
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        scope = current_scope()
        if not scope.all_tenants and scope.tenant_id != self.tenant_id:
            raise TenantNotSet(f"Refusing to delete {self._meta.label} outside its tenant's context")
        return super().delete(*args, **kwargs)


def tenant_key_indexed_by_meta(on_delete=models.CASCADE):
    """The tenant foreign key of a table whose Meta already has an index or unique constraint
    leading with tenant_id: that index serves every tenant filter, the row-level security
    policy and the foreign key's checks, so a second index on tenant_id alone would only cost
    each write. Used by the tables a chat turn writes (tests/tenants/test_tenant_indexes.py checks
    that every tenant table keeps an index leading with tenant_id)."""
    return models.ForeignKey("tenants.Tenant", on_delete=on_delete, related_name="+", db_index=False)


def assign_tenant(instance) -> None:
    """The rule for writing a tenant-owned row: its tenant comes from the context, and a
    row for another tenant is refused (TenantNotSet). save() applies it, and so does
    portal.db.sql.insert, the chat turn's hand-written INSERTs."""
    scope = current_scope()
    if instance.tenant_id is None:
        if scope.tenant_id is None:
            raise TenantNotSet(f"Cannot save {instance._meta.label} without a tenant in the context")
        instance.tenant_id = scope.tenant_id
    elif not scope.all_tenants and scope.tenant_id != instance.tenant_id:
        raise TenantNotSet(
            f"Refusing to save {instance._meta.label} for tenant {instance.tenant_id} "
            f"while the context is tenant {scope.tenant_id}"
        )


class SharedOrTenantManager(models.Manager):
    """Shared rows (no owner) plus the current tenant's own; raises with no tenant set."""

    def get_queryset(self):
        scope = current_scope()
        if scope.tenant_id is None:
            raise TenantNotSet(
                f"{self.model._meta.label}.objects needs a tenant in the context; "
                f"the operator reads all rows through {self.model._meta.object_name}.unscoped inside all_tenants()."
            )
        return (
            super()
            .get_queryset()
            .filter(models.Q(owner_tenant__isnull=True) | models.Q(owner_tenant_id=scope.tenant_id))
        )


class SharedOrTenantModel(models.Model):
    """Platform catalogue rows that a tenant may also own privately (its own agents,
    its fine-tuned models). Shared rows have no owner and every tenant sees them;
    a tenant's rows are seen by that tenant only — in Python by the manager, on
    PostgreSQL by the row-level security policy (tenants/rls.py)."""

    owner_tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, null=True, blank=True, related_name="+", db_index=True
    )

    objects = SharedOrTenantManager()
    unscoped = UnscopedManager()

    class Meta:
        abstract = True

    @property
    def is_shared(self) -> bool:
        return self.owner_tenant_id is None

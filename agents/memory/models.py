"""Long-term memory: facts a member's agents keep between conversations.

Every record is tenant-owned (TenantOwnedModel: the default manager raises without
a tenant, and on PostgreSQL row-level security backs it up) and lives in one
hierarchical namespace (agents/memory/policy.py):

* ``/tenant/<tenant>/user/<user>/agent/<slug>``  one member's facts for one agent;
* ``/tenant/<tenant>/user/<user>``               one member's facts for all the tenant's agents;
* ``/tenant/<tenant>/shared``                    the tenant's facts, read by all its agents.

`user` and `agent` repeat what the namespace says, so that the policy and the pages
filter on indexed keys rather than parse strings; policy.namespace_for() is the only
place both are derived from.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from tenants.scoping import TenantOwnedModel, tenant_key_indexed_by_meta

MAX_CONTENT_CHARS = 1000


class MemoryRecord(TenantOwnedModel):
    tenant = tenant_key_indexed_by_meta()
    namespace = models.CharField(max_length=300)
    # None: the tenant-shared namespace.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    # None: the member's facts for all the tenant's agents (or the shared namespace).
    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    content = models.TextField()
    # The turn that stored it (None: written by a person or the demo seed, or the turn is gone).
    source_invocation = models.ForeignKey(
        "agents.Invocation", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["tenant", "user", "agent"], name="memory_tenant_user_agent")]

    def __str__(self) -> str:
        return f"{self.namespace}: {self.content[:40]}"

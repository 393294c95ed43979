"""Writing the audit log. Every administrative service calls `record()`."""

from __future__ import annotations

from typing import Any

from django.db import models

from tenants.models import AuditLog, Tenant


def snapshot(obj: models.Model, fields: list[str]) -> dict[str, Any]:
    """A JSON-safe picture of some fields, for before/after."""
    out: dict[str, Any] = {}
    for name in fields:
        value = getattr(obj, name)
        if isinstance(value, models.Model):
            value = str(value.pk)
        elif not isinstance(value, str | int | float | bool | list | dict | type(None)):
            value = str(value)
        out[name] = value
    return out


def record(
    action: str,
    *,
    actor=None,
    tenant: Tenant | None = None,
    target: models.Model | None = None,
    target_repr: str = "",
    before: dict | None = None,
    after: dict | None = None,
    ip: str | None = None,
) -> AuditLog:
    entry = AuditLog(
        tenant=tenant,
        actor=actor if actor is not None and actor.is_authenticated else None,
        actor_email=getattr(actor, "email", "") or "",
        action=action,
        target_type=target._meta.label if target is not None else "",
        target_id=str(target.pk) if target is not None else "",
        target_repr=(target_repr or (str(target) if target is not None else ""))[:200],
        before=before or {},
        after=after or {},
        ip_address=ip or None,
    )
    entry.save(force_insert=True)
    return entry


def client_ip(request) -> str | None:
    """The client address as the web server saw it (no X-Forwarded-For trust by default)."""
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None

"""Writing the audit log (every administrative service calls `record()`) and exporting it."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from django.db import models

from tenants.models import AuditLog, Membership, Tenant

# What each action the code records is called on the audit pages and in the CSV export (the
# code stays alongside: it is what the filter and integrations match). Every code passed to
# record() needs a label here: tests/tenants/test_audit_labels.py scans the source for them.
ACTION_LABELS: dict[str, str] = {
    # the organisation and its plan
    "tenant.created": "Organisation created",
    "tenant.updated": "Organisation settings changed",
    "tenant.tier_changed": "Plan changed",
    "tenant.deployment_model_changed": "Deployment model changed",
    "tenant.turns_requeued": "Queued turns moved to the new queue",
    "tenant.features_changed": "Features granted or revoked",
    "tenant.suspended": "Organisation suspended",
    "tenant.reactivated": "Organisation reactivated",
    "tenant.mfa_required": "Two-factor authentication required",
    "tenant.mfa_optional": "Two-factor authentication made optional",
    "tier.created": "Tier created",
    "tier.updated": "Tier changed",
    # members and invitations
    "invitation.created": "Invitation sent",
    "invitation.resent": "Invitation resent",
    "invitation.revoked": "Invitation revoked",
    "invitation.accepted_existing_member": "Invitation accepted by an existing member",
    "membership.created": "Member joined",
    "membership.role_changed": "Member's role changed",
    "membership.removed": "Member removed",
    # accounts and permission groups, changed by the provider's staff in the Django admin
    "user.changed_by_operator": "Account changed by an operator",
    "group.changed_by_operator": "Permission group changed by an operator",
    # single sign-on
    "sso.created": "Single sign-on set up",
    "sso.updated": "Single sign-on changed",
    "sso.disabled": "Single sign-on turned off",
    "sso.domain_verified": "Domain verified for single sign-on",
    "sso.domain_claim_removed": "Domain claim removed",
    "sso.account_linked": "Account linked to single sign-on",
    # API clients and agent identities
    "api_client.created": "API client created",
    "api_client.revoked": "API client revoked",
    "api_client.taken_over": "API client taken over",
    "api_client.paused": "API clients paused (owner lost access)",
    "agent_identity.created": "Agent identity created",
    "agent_identity.rotated": "Agent identity secret rotated",
    "agent_identity.enabled": "Agent identity enabled",
    "agent_identity.disabled": "Agent identity disabled",
    "operator_token.created": "Operator API token created",
    "operator_token.revoked": "Operator API token revoked",
    "agent.allowed": "Agent allowed",
    "agent.disallowed": "Agent disallowed",
    # chat, knowledge and guardrails
    "chat.conversation_deleted": "Conversation deleted",
    "knowledge.base_created": "Knowledge base created",
    "knowledge.base_updated": "Knowledge base changed",
    "knowledge.base_deleted": "Knowledge base deleted",
    "knowledge.document_uploaded": "Document uploaded",
    "knowledge.document_replaced": "Document replaced",
    "knowledge.document_deleted": "Document deleted",
    "knowledge.agent_bases_changed": "Agent's knowledge bases changed",
    "tools.tool_created": "Tool added to the registry",
    "tools.tool_updated": "Tool changed in the registry",
    "tools.agent_tools_changed": "Agent's tools changed",
    "skills.skill_created": "Skill added",
    "skills.skill_updated": "Skill changed",
    "skills.agent_skills_changed": "Agent's skills changed",
    "registry.version_created": "Agent version drafted",
    "registry.version_submitted": "Agent version submitted for review",
    "registry.version_approved": "Agent version approved and published",
    "registry.version_rejected": "Agent version rejected",
    "registry.version_rolled_back": "Agent roll back submitted for review",
    "memory.added": "Memory added by its member",
    "memory.deleted": "Memory deleted by its member",
    "memory.cleared": "Member's memory cleared",
    "memory.shared_added": "Shared memory added",
    "memory.shared_deleted": "Shared memory deleted",
    "guardrails.policy_updated": "Guardrail policy changed",
    "guardrails.tier_policy_updated": "Tier guardrail policy changed",
    # billing
    "billing.budget_set": "Monthly budget set",
    "billing.budget_raised_for_plan": "Monthly budget raised to the new plan's fee",
    "billing.user_limit_set": "Limits per person set",
    "billing.budget_soft_alert": "Monthly budget alert reached",
    "invoice.finalised": "Invoice finalised",
    # the log itself and the operator console
    "audit.exported": "Audit log exported",
    "operator.viewed": "Viewed by an operator",
}


def action_label(action: str) -> str:
    """The action's name for people ("api_client.taken_over" → "API client taken over"); an
    unknown code (an entry older than its label) as it is."""
    return ACTION_LABELS.get(action, action)


def actions_matching(text: str) -> list[str]:
    """The codes whose label contains `text` (any case): the filter finds "taken over" too."""
    needle = text.casefold()
    return [code for code, label in ACTION_LABELS.items() if needle in label.casefold()]


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


# What every entry recorded while it is set adds to its `after`: the credential the actor
# used when it is not their own session (an operator API token, see
# tenants.identity.operator_tokens.acting_with), so that services deep below need not pass it.
_via: ContextVar[dict | None] = ContextVar("audit_via", default=None)


@contextmanager
def via(extra: dict) -> Iterator[None]:
    reset = _via.set(extra)
    try:
        yield
    finally:
        _via.reset(reset)


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
        after={**(after or {}), **(_via.get() or {})},
        ip_address=ip or None,
    )
    entry.save(force_insert=True)
    return entry


def client_ip(request) -> str | None:
    """The client address as the web server saw it (no X-Forwarded-For trust by default)."""
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


# --- export ------------------------------------------------------------------------------------

EXPORTED = "audit.exported"
EXPORT_BATCH = 500  # rows read per query; each batch goes out as one chunk of the response
EXPORT_COLUMNS = [
    "id",
    "created_at",
    "actor_email",
    "ip_address",
    "action",
    "target_type",
    "target_id",
    "target",
    "before",
    "after",
    # Last, so that a reader of the earlier columns by position keeps working.
    "action_label",
]
# The operator's export spans tenants: each row says whose it is (empty for the platform's own).
PLATFORM_EXPORT_COLUMNS = [*EXPORT_COLUMNS[:2], "tenant", *EXPORT_COLUMNS[2:]]
# A spreadsheet runs a cell that starts with one of these as a formula (OWASP "CSV injection");
# tab and carriage return count too, because some spreadsheets strip them before looking.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """`text` as a cell a spreadsheet shows as text: a leading quote before a formula start.
    Every CSV export (audit logs, usage, invoices, the operator's billing table) uses this one."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def iso_utc(moment) -> str:
    """2026-03-14T09:30:05Z: ISO 8601, in UTC, to the second."""
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _export_row(entry: AuditLog, *, with_tenant: bool = False) -> list[str]:
    def as_json(value: dict) -> str:
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str) if value else ""

    cells = [
        str(entry.pk),
        iso_utc(entry.created_at),
        *([entry.tenant.slug if entry.tenant_id else ""] if with_tenant else []),
        entry.actor_email,
        entry.ip_address or "",
        entry.action,
        entry.target_type,
        entry.target_id,
        entry.target_repr,
        as_json(entry.before),
        as_json(entry.after),
        action_label(entry.action),
    ]
    return [spreadsheet_safe(cell) for cell in cells]


def _csv_text(rows) -> str:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


@dataclass(frozen=True)
class AuditExport:
    """The rows one export selected, read a batch at a time, newest first: one tenant's
    log (`tenant`), or the operator's across every tenant and the platform (`tenant` None,
    read under all_tenants(`reason`), with a tenant column).

    A streamed body is read after the view has returned, when the request's tenant
    context is gone (and, under ASGI, on whichever thread asgiref picks): every batch
    sets the scope itself, so the rows stay scoped (and row-level security applies)."""

    tenant: Tenant | None
    entries: models.QuerySet
    user_id: int | None = None
    reason: str = ""  # why the operator's export reads across tenants (all_tenants)

    def __post_init__(self):
        if self.tenant is None and not self.reason:
            raise ValueError("An export across tenants needs the reason it reads them all")

    @property
    def columns(self) -> list[str]:
        return EXPORT_COLUMNS if self.tenant is not None else PLATFORM_EXPORT_COLUMNS

    def header(self) -> str:
        return _csv_text([self.columns])

    @contextmanager
    def _scope(self) -> Iterator[None]:
        from tenants.context import all_tenants, tenant_context, user_context

        if self.tenant is not None:
            with tenant_context(self.tenant, user_id=self.user_id):
                yield
        else:
            with user_context(self.user_id), all_tenants(self.reason):
                yield

    def batch(self, after: tuple | None) -> tuple[str, tuple | None]:
        """The CSV of the batch after the keyset `after` (created_at, id), and the keyset to
        read the next one from; None when this was the last batch."""
        rows = self.entries.order_by("-created_at", "-id")
        if after is not None:
            created_at, pk = after
            rows = rows.filter(models.Q(created_at__lt=created_at) | models.Q(created_at=created_at, id__lt=pk))
        with self._scope():
            entries = list(rows[:EXPORT_BATCH])
        if not entries:
            return "", None
        last = entries[-1]
        following = (last.created_at, last.pk) if len(entries) == EXPORT_BATCH else None
        with_tenant = self.tenant is None
        return _csv_text(_export_row(e, with_tenant=with_tenant) for e in entries), following

    def chunks(self) -> Iterator[str]:
        yield self.header()
        after = None
        while True:
            text, after = self.batch(after)
            if text:
                yield text
            if after is None:
                return

    async def achunks(self) -> AsyncIterator[str]:
        """chunks() for an ASGI server: Django reads a sync iterator whole before it sends
        anything, so a large log would sit in memory. Each batch runs on the request's
        thread (thread_sensitive), i.e. with the request's database connection."""
        from asgiref.sync import sync_to_async

        yield self.header()
        read = sync_to_async(self.batch, thread_sensitive=True)
        after = None
        while True:
            text, after = await read(after)
            if text:
                yield text
            if after is None:
                return


def seeded_by(role: str):
    """The demo seed's actor for what `role` would do in the current tenant (its first member
    with that role), so the demo's audit trail names the people who would really have done each thing."""
    membership = Membership.objects.filter(role=role).select_related("user").order_by("pk").first()
    return membership.user if membership is not None else None

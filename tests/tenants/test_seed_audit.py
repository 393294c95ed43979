"""The demo's audit trail: what the seed creates is recorded as its people would have done it, once."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from tenants.context import tenant_context
from tenants.models import AuditLog, Tenant

pytestmark = pytest.mark.django_db


def _trail(slug: str) -> list[tuple[str, str]]:
    tenant = Tenant.objects.get(slug=slug)
    with tenant_context(tenant):
        return sorted(AuditLog.objects.values_list("action", "actor_email"))


def test_seed_records_what_it_created_by_whom_and_only_once():
    call_command("seed_demo", stdout=io.StringIO())
    trail = _trail("acme")
    assert ("tenant.created", "operator@portal.example") in trail
    assert ("membership.created", "member1@acme.example") in trail
    assert sum(1 for action, _ in trail if action == "membership.created") == 4
    initech = _trail("initech")  # entitled to knowledge bases, and has a budget
    assert {"knowledge.base_created", "knowledge.document_uploaded"} <= {action for action, _ in initech}
    assert all(email == "admin@initech.example" for action, email in initech if action.startswith("knowledge."))
    assert ("billing.budget_set", "owner@initech.example") in initech

    call_command("seed_demo", stdout=io.StringIO())
    assert _trail("acme") == trail  # a second run adds nothing

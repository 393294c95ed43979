"""Guardrail fixtures: the chat catalogue and fake runtime of tests/agents, and policy helpers."""

from __future__ import annotations

import pytest

from agents.guardrails import backends
from agents.guardrails.models import GuardrailPolicy, TenantGuardrailOverride
from tenants.context import tenant_context
from tests.agents.conftest import catalogue, eager, runtime  # noqa: F401  (fixtures reused as they are)


def set_tier_policy(tier, config: dict) -> None:
    GuardrailPolicy.objects.update_or_create(tier=tier, defaults={"config": config})


def set_override(tenant, config: dict) -> None:
    with tenant_context(tenant):
        TenantGuardrailOverride.objects.update_or_create(tenant=tenant, defaults={"config": config})


def grant_custom_guardrails(tenant) -> None:
    tenant.feature_grants = sorted(set(tenant.feature_grants or []) | {"custom_guardrails"})
    tenant.save(update_fields=["feature_grants"])


@pytest.fixture(autouse=True)
def _no_bedrock_client_between_tests():
    yield
    backends.set_client(None)

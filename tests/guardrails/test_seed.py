"""The demo seed: tier defaults (premium: HIPAA + PCI DSS, fail closed), canaries, events; idempotent."""

from __future__ import annotations

import pytest

from agents.guardrails import services
from agents.guardrails.models import GuardrailEvent, GuardrailPolicy, TenantCanary
from agents.guardrails.seed import seed_guardrails
from tenants.context import all_tenants
from tests import factories

pytestmark = pytest.mark.django_db


def counts():
    with all_tenants("test: seed counts"):
        return GuardrailPolicy.objects.count(), GuardrailEvent.unscoped.count(), TenantCanary.unscoped.count()


def test_it_seeds_tier_defaults_canaries_and_events_once():
    premium = factories.make_tier("premium")
    tenant = factories.make_tenant("initech", tier=premium, name="Initech")
    assert seed_guardrails() > 0
    first = counts()
    assert first[0] == 1 and first[1] > 0 and first[2] == 1
    config = services.effective_policy(tenant).config
    assert config["presets"] == ["hipaa", "pci-dss"] and config["failure_mode"] == "closed"
    assert seed_guardrails() == 0
    assert counts() == first

"""The demo seed: tier defaults (premium: HIPAA + PCI DSS, fail closed), canaries, events; idempotent."""

from __future__ import annotations

import pytest

from agents.guardrails import services
from agents.guardrails.models import GuardrailEvent, GuardrailPolicy, TenantCanary
from agents.guardrails.seed import seed_guardrails
from agents.models import Invocation
from tenants.context import all_tenants
from tests import factories

pytestmark = pytest.mark.django_db


def counts():
    with all_tenants("test: seed counts"):
        return GuardrailPolicy.objects.count(), GuardrailEvent.unscoped.count(), TenantCanary.unscoped.count()


def test_it_seeds_tier_defaults_canaries_and_the_events_of_the_demo_turns_once(monkeypatch):
    from agents.seed import seed_catalogue
    from billing import seed as billing_seed

    premium = factories.make_tier("premium")
    tenant = factories.make_tenant("initech", tier=premium, name="Initech")
    factories.add_member(tenant)
    seed_catalogue()
    monkeypatch.setattr(billing_seed, "DAYS", 14)
    billing_seed.seed_usage()  # the metered turns the guardrail events belong to

    assert seed_guardrails() > 0
    first = counts()
    assert first[0] == 1 and first[1] > 0 and first[2] == 1
    with all_tenants("test: seed counts"):
        # Each event is a trigger of one of the demo's turns, never of no turn.
        assert not GuardrailEvent.unscoped.filter(invocation__isnull=True).exists()
        assert Invocation.unscoped.filter(status="blocked").exists()
    config = services.effective_policy(tenant).config
    assert config["presets"] == ["hipaa", "pci-dss"] and config["failure_mode"] == "closed"
    assert seed_guardrails() == 0
    assert counts() == first


def test_a_persons_demo_turns_repeat_a_question_only_after_every_other_one(monkeypatch):
    """Their chat list is their demo conversations: dealt from a deck per person, not drawn
    at random, so one question does not fill it."""
    from collections import Counter

    from agents.models import Invocation
    from agents.seed import seed_catalogue
    from billing import seed as billing_seed

    premium = factories.make_tier("premium")
    tenant = factories.make_tenant("initech", tier=premium, name="Initech")
    factories.add_member(tenant)
    seed_catalogue()
    monkeypatch.setattr(billing_seed, "DAYS", 14)
    billing_seed.seed_usage()
    seed_guardrails()

    with all_tenants("test: demo titles"):
        rows = Invocation.unscoped.values_list("user_id", "status", "conversation__title")
        groups: dict[tuple, Counter] = {}
        for user_id, status, title in rows:
            if status in ("done", "blocked"):
                groups.setdefault((user_id, status), Counter())[title] += 1
    assert groups
    for key, titles in groups.items():
        counts = titles.most_common()
        assert counts[0][1] - counts[-1][1] <= 1, (key, counts)

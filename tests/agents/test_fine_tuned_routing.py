"""A tenant's fine-tuned model replaces the shared one only when it is entitled to it."""

from __future__ import annotations

import pytest

from agents import services
from agents.models import ModelOffering, Provider
from tenants.context import all_tenants

pytestmark = pytest.mark.django_db


@pytest.fixture
def fine_tuned(world, catalogue):
    with all_tenants("test: a tenant's fine-tuned model"):
        return ModelOffering.unscoped.create(
            key="alpha-ft",
            name="Alpha's fine-tune",
            provider=Provider.OFFLINE,
            model_id="offline-small",
            base=catalogue.offering,
            owner_tenant=world.a.tenant,
        )


def set_features(tenant, grants=(), revocations=()):
    tenant.feature_grants, tenant.feature_revocations = list(grants), list(revocations)
    tenant.save(update_fields=["feature_grants", "feature_revocations"])
    services.clear_offerings_cache()


def test_it_routes_an_entitled_tenant_to_its_fine_tuned_model(world, catalogue, fine_tuned):
    set_features(world.a.tenant, grants=["fine_tuned_models"])
    route = services.route_model(catalogue.helpdesk, world.a.tenant)
    assert (route.offering, route.reason) == (fine_tuned, "fine-tuned")


def test_it_routes_a_tenant_without_the_feature_as_if_it_had_no_fine_tuned_model(world, catalogue, fine_tuned):
    set_features(world.a.tenant, revocations=["fine_tuned_models"])
    route = services.route_model(catalogue.helpdesk, world.a.tenant)
    assert (route.offering, route.reason) == (catalogue.offering, "agent")

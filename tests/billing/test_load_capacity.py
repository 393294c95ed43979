"""Whether a tenant runs on the shared capacity is read from its bindings (its own queue and
runtime), not from the name of its deployment model."""

from __future__ import annotations

import pytest

from billing import load
from tenants.models import DeploymentModel

pytestmark = pytest.mark.django_db

OWN_ARN = "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/tenant_a-YYYYYYYYYY"


def row(tenant, deployment_model, **bindings) -> load.LoadRow:
    tenant.deployment_model = deployment_model
    tenant.resource_bindings = bindings
    return load.LoadRow(tenant=tenant)


def test_a_silo_on_its_own_queue_and_runtime_has_capacity_of_its_own(world, settings):
    settings.AGENT_RUNTIME = "agentcore"
    assert row(world.a.tenant, DeploymentModel.SILO, runtime_arn=OWN_ARN).shared is False


def test_a_silo_that_shares_its_tiers_queue_counts_on_the_shared_capacity(world, settings):
    settings.AGENT_RUNTIME = "agentcore"
    tier_queue = world.a.tenant.tier.celery_queue
    assert row(world.a.tenant, DeploymentModel.SILO, runtime_arn=OWN_ARN, celery_queue=tier_queue).shared is True


def test_a_silo_without_its_own_remote_runtime_counts_on_the_shared_capacity(world, settings):
    settings.AGENT_RUNTIME = "http"
    assert row(world.a.tenant, DeploymentModel.SILO, runtime_arn=OWN_ARN).shared is True


def test_on_the_in_process_runtime_the_own_queue_decides(world, settings):
    settings.AGENT_RUNTIME = "local"
    assert row(world.a.tenant, DeploymentModel.SILO).shared is False
    assert row(world.b.tenant, DeploymentModel.POOL).shared is True

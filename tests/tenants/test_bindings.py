"""A tenant's resource bindings are validated by the model, wherever they are written."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from tenants import services
from tenants.models import DeploymentModel

pytestmark = pytest.mark.django_db


def test_it_refuses_a_runtime_arn_of_the_wrong_shape(world):
    tenant = world.a.tenant
    tenant.resource_bindings = {"runtime_arn": "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/has-hyphen"}
    with pytest.raises(ValidationError, match="runtime_arn: Not a valid value"):
        tenant.full_clean()


def test_it_refuses_a_queue_with_a_trailing_newline(world):
    tenant = world.a.tenant
    tenant.resource_bindings = {"celery_queue": "tenant-a\n"}
    with pytest.raises(ValidationError, match="celery_queue"):
        tenant.full_clean()


def test_update_tenant_answers_a_bad_binding_with_a_service_error(world, operator):
    tenant = world.a.tenant
    with pytest.raises(services.ServiceError, match="celery_queue"):
        services.update_tenant(
            operator,
            tenant,
            deployment_model=DeploymentModel.SILO,
            resource_bindings={"celery_queue": tenant.tier.celery_queue},
        )


def test_create_tenant_answers_a_silo_whose_default_queue_is_taken_with_a_service_error(world, operator):
    world.b.tenant.resource_bindings = {"celery_queue": "tenant-newco"}
    world.b.tenant.save()
    with pytest.raises(services.ServiceError, match="tenant-newco is the queue of"):
        services.create_tenant(
            operator, slug="newco", name="NewCo", tier=world.a.tenant.tier, deployment_model=DeploymentModel.SILO
        )


@pytest.mark.parametrize(
    "key, value",
    [
        # Its role is its credentials: bound to another tenant too, that tenant's AWS calls
        # (its runtime, memory, knowledge base) would sign as this one's.
        ("iam_role_arn", "arn:aws:iam::123456789012:role/tenant-b-runtime"),
        # Its gateway serves its tools: another tenant's tool calls would run there.
        ("gateway_id", "tenant-b-gateway-a1b2c3d4e5"),
    ],
)
def test_it_refuses_a_role_or_gateway_another_tenant_has_bound(world, key, value):
    b = world.b.tenant
    b.deployment_model = DeploymentModel.SILO
    b.resource_bindings = {key: value}
    b.save()
    tenant = world.a.tenant
    tenant.deployment_model = DeploymentModel.SILO
    tenant.resource_bindings = {key: value}
    with pytest.raises(ValidationError, match=f"{key}: Already bound to {b.name}"):
        tenant.full_clean()


@pytest.mark.parametrize(
    "key, setting, value, what",
    [
        ("iam_role_arn", "AWS_TENANT_ROLE_ARN", "arn:aws:iam::123456789012:role/portal-tenants", "role"),
        ("knowledge_base_id", "KNOWLEDGE_BEDROCK_KB_ID", "POOLEDKB01", "knowledge base"),
        ("knowledge_data_source_id", "KNOWLEDGE_BEDROCK_DATA_SOURCE_ID", "POOLEDDS01", "data source"),
    ],
)
def test_it_refuses_the_platforms_shared_role_or_knowledge_base_as_a_dedicated_one(
    world, settings, key, setting, value, what
):
    setattr(settings, setting, value)
    tenant = world.a.tenant
    tenant.deployment_model = DeploymentModel.SILO
    tenant.resource_bindings = {key: value, **({"knowledge_base_id": "OWNKBASE01"} if "source" in key else {})}
    with pytest.raises(ValidationError, match=f"{key}: This is the platform's shared {what}, not a dedicated one."):
        tenant.full_clean()

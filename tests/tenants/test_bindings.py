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

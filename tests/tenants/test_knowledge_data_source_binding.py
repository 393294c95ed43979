"""A tenant with its own Bedrock knowledge base binds the data source that syncs it."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from agents.knowledge import bedrock
from tenants.models import DeploymentModel

pytestmark = pytest.mark.django_db


def silo(tenant, **bindings):
    tenant.deployment_model = DeploymentModel.SILO
    tenant.resource_bindings = bindings
    return tenant


def test_it_accepts_a_knowledge_data_source_binding(world):
    silo(world.a.tenant, knowledge_base_id="SILOKB0001", knowledge_data_source_id="SILODS0001").full_clean()
    assert world.a.tenant.bindings.knowledge_data_source_id == "SILODS0001"


def test_it_refuses_a_data_source_without_its_knowledge_base(world):
    with pytest.raises(ValidationError, match="knowledge_data_source_id: A data source belongs to a knowledge base"):
        silo(world.a.tenant, knowledge_data_source_id="SILODS0001").full_clean()


def test_it_refuses_a_data_source_id_of_the_wrong_shape(world):
    with pytest.raises(ValidationError, match="knowledge_data_source_id: Not a valid value"):
        silo(world.a.tenant, knowledge_base_id="SILOKB0001", knowledge_data_source_id="ds-1").full_clean()


def test_it_syncs_a_tenants_own_knowledge_base_with_its_own_data_source(world, settings):
    settings.KNOWLEDGE_BEDROCK_DATA_SOURCE_ID = "SHAREDDS01"
    tenant = silo(world.a.tenant, knowledge_base_id="SILOKB0001", knowledge_data_source_id="SILODS0001")
    assert bedrock.data_source_id(tenant) == "SILODS0001"


def test_it_never_syncs_a_tenants_own_knowledge_base_with_the_pooled_data_source(world, settings):
    settings.KNOWLEDGE_BEDROCK_DATA_SOURCE_ID = "SHAREDDS01"
    assert bedrock.data_source_id(silo(world.a.tenant, knowledge_base_id="SILOKB0001")) == ""


def test_the_console_binds_a_knowledge_data_source(client, world, operator):
    tenant = world.a.tenant
    client.force_login(operator)
    data = {"name": tenant.name, "tier": tenant.tier_id, "deployment_model": DeploymentModel.SILO}
    data.update(region=tenant.region, knowledge_base_id="SILOKB0001", knowledge_data_source_id="SILODS0001")
    response = client.post(reverse("operator:tenant_detail", kwargs={"slug": tenant.slug}), data)
    assert response.status_code == 302
    tenant.refresh_from_db()
    assert tenant.resource_bindings == {"knowledge_base_id": "SILOKB0001", "knowledge_data_source_id": "SILODS0001"}

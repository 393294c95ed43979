"""A tenant's AWS region: it travels to the runtime as a header, so only a region's shape is kept."""

from __future__ import annotations

import pytest

from agents.runtime_gateway import RuntimeRejected, tenant_context_headers
from tenants import services
from tenants.models import Tenant, Tier
from tests.tenants.helpers import platform_audit_entries

pytestmark = pytest.mark.django_db

REGION_HEADER = "X-Amzn-Bedrock-AgentCore-Runtime-Custom-Region"
BAD_REGIONS = [
    "us-east-1\r\nX-Injected: yes",
    "us-east-1\nX",
    "us east 1",
    "US-EAST-1",
    "us-east-1; drop",
    "nowhere",
    "us-east-1\x00",
]
GOOD_REGIONS = ["eu-west-1", "us-gov-west-1", "us-isob-east-1", "ap-southeast-4", "cn-north-1"]


def create_form(**overrides) -> dict:
    data = {
        "name": "Charlie Ltd",
        "slug": "charlie",
        "tier": str(Tier.objects.get(slug="standard-test").pk),
        "deployment_model": "pool",
        "region": "eu-west-1",
    }
    data.update(overrides)
    return data


@pytest.mark.parametrize("region", BAD_REGIONS)
def test_it_refuses_onboarding_with_a_region_that_is_not_a_regions_shape(client, world, operator, region):
    client.force_login(operator)
    response = client.post("/operator/tenants/new/", create_form(region=region))
    assert response.status_code == 400
    assert "region" in response.context["form"].errors
    assert not Tenant.objects.filter(slug="charlie").exists()
    assert platform_audit_entries("tenant.created") == []


@pytest.mark.parametrize("region", GOOD_REGIONS)
def test_it_onboards_a_tenant_in_any_region_of_aws_shape(client, world, operator, region):
    client.force_login(operator)
    response = client.post("/operator/tenants/new/", create_form(region=region))
    assert response.status_code == 302
    assert Tenant.objects.get(slug="charlie").region == region


@pytest.mark.parametrize("region", BAD_REGIONS)
def test_it_refuses_a_tenant_edit_with_a_bad_region_and_keeps_the_saved_one(client, world, operator, region):
    client.force_login(operator)
    tenant = world.a.tenant
    data = {"name": tenant.name, "tier": tenant.tier_id, "deployment_model": tenant.deployment_model}
    response = client.post(f"/operator/tenants/{tenant.slug}/", {**data, "region": region})
    assert response.status_code == 400
    assert "region" in response.context["form"].errors
    tenant.refresh_from_db()
    assert tenant.region == "us-east-1"


def test_the_services_refuse_a_bad_region_whoever_calls_them(world, operator):
    with pytest.raises(services.ServiceError):
        services.create_tenant(
            operator, slug="charlie", name="Charlie", tier=world.a.tenant.tier, region="us-east-1\r\nX: y"
        )
    assert not Tenant.objects.filter(slug="charlie").exists()
    with pytest.raises(services.ServiceError):
        services.update_tenant(operator, world.a.tenant, region="eu west 1")
    assert Tenant.objects.get(pk=world.a.tenant.pk).region == "us-east-1"


def test_a_region_of_aws_shape_reaches_the_runtime_header(world):
    Tenant.objects.filter(pk=world.a.tenant.pk).update(region="eu-central-2")
    tenant = Tenant.objects.get(pk=world.a.tenant.pk)
    headers = tenant_context_headers(tenant, session_id="s" * 40, user_id=1)
    assert headers[REGION_HEADER] == "eu-central-2"


def test_a_bad_region_stored_before_the_check_never_reaches_the_runtime_header(world):
    # Written around every form and service, as a row from before the check would be.
    Tenant.objects.filter(pk=world.a.tenant.pk).update(region="us-east-1\r\nX-Injected: yes")
    tenant = Tenant.objects.get(pk=world.a.tenant.pk)
    with pytest.raises(RuntimeRejected, match="region"):
        tenant_context_headers(tenant, session_id="s" * 40, user_id=1)

"""The operator console's resource bindings: the dedicated runtime, validated bindings."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tenants.models import DeploymentModel

pytestmark = pytest.mark.django_db

OWN_URL = "http://tenant-a-runtime.internal:8080"


def page(tenant):
    return reverse("operator:tenant_detail", kwargs={"slug": tenant.slug})


def post_bindings(client, tenant, **bindings):
    data = {"name": tenant.name, "tier": tenant.tier_id, "deployment_model": DeploymentModel.SILO}
    data["region"] = tenant.region
    data.update(bindings)
    return client.post(page(tenant), data)


def test_it_binds_a_dedicated_http_runtime_url(client, world, operator):
    client.force_login(operator)
    response = post_bindings(client, world.a.tenant, runtime_url=OWN_URL)
    assert response.status_code == 302
    world.a.tenant.refresh_from_db()
    assert world.a.tenant.bindings.runtime_url == OWN_URL


def test_it_says_dedication_does_not_apply_on_the_embedded_local_runtime(client, world, operator, settings):
    settings.AGENT_RUNTIME = "local"
    client.force_login(operator)
    response = client.get(page(world.a.tenant))
    assert b'id="local-runtime-note"' in response.content
    assert b"single-process development runtime" in response.content
    assert b"knowledge base bindings are kept but not used" in response.content


OWN_ARN = "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/tenant_a-YYYYYYYYYY"


def test_it_refuses_bindings_that_are_not_of_their_aws_shape(client, world, operator):
    client.force_login(operator)
    response = post_bindings(
        client,
        world.a.tenant,
        runtime_arn="not an arn at all",
        iam_role_arn="hello",
        memory_id="short",
        knowledge_base_id="kb",
        gateway_id="Gateway!",
        runtime_url="ftp://runtime",
        celery_queue="Bad Queue!! ünïcode",
    )
    assert response.status_code == 400
    errors = response.context["form"].errors
    fields = ["runtime_arn", "iam_role_arn", "memory_id", "knowledge_base_id", "gateway_id", "runtime_url"]
    assert sorted(errors) == sorted([*fields, "celery_queue"])
    world.a.tenant.refresh_from_db()
    assert world.a.tenant.resource_bindings == {}


def test_it_accepts_bindings_of_their_aws_shapes(client, world, operator):
    client.force_login(operator)
    bindings = {
        "runtime_arn": OWN_ARN,
        "iam_role_arn": "arn:aws:iam::123456789012:role/service-role/tenant-a.runtime",
        "memory_id": "tenant_a_memory-a1B2c3D4e5",
        "knowledge_base_id": "ABCDE12345",
        "gateway_id": "tenant-a-gateway-a1b2c3d4e5",
        "celery_queue": "tenant-a.turns",
    }
    response = post_bindings(client, world.a.tenant, **bindings)
    assert response.status_code == 302
    world.a.tenant.refresh_from_db()
    assert world.a.tenant.resource_bindings == bindings


def test_it_refuses_a_dedicated_queue_that_is_a_tiers_queue(client, world, operator):
    client.force_login(operator)
    response = post_bindings(client, world.a.tenant, celery_queue=world.b.tenant.tier.celery_queue)
    assert response.status_code == 400
    assert "a tier's shared queue" in response.context["form"].errors["celery_queue"][0]


def test_it_refuses_a_silo_whose_default_queue_another_tenant_has_bound(client, world, operator):
    b = world.b.tenant
    b.resource_bindings = {"celery_queue": f"tenant-{world.a.tenant.slug}"}
    b.save()
    client.force_login(operator)
    response = post_bindings(client, world.a.tenant)
    assert response.status_code == 400
    assert f"the queue of {b.name}" in response.context["form"].errors["celery_queue"][0]


def test_it_refuses_a_runtime_memory_and_knowledge_base_bound_to_another_tenant(client, world, operator):
    b = world.b.tenant
    taken = {
        "runtime_arn": OWN_ARN,
        "runtime_url": OWN_URL,
        "memory_id": "tenant_b_memory-a1B2c3D4e5",
        "knowledge_base_id": "ABCDE12345",
    }
    b.deployment_model = DeploymentModel.SILO
    b.resource_bindings = taken
    b.save()
    client.force_login(operator)
    response = post_bindings(client, world.a.tenant, **taken)
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert {key: errors[key] for key in taken} == {key: [f"Already bound to {b.name} ({b.slug})."] for key in taken}


def test_it_refuses_the_platforms_shared_runtime_as_a_dedicated_one(client, world, operator, settings):
    settings.AGENTCORE_RUNTIME_ARN = OWN_ARN
    client.force_login(operator)
    response = post_bindings(client, world.a.tenant, runtime_arn=OWN_ARN)
    assert response.status_code == 400
    assert "shared runtime" in response.context["form"].errors["runtime_arn"][0]


def test_it_reports_a_shared_queue_beside_a_badly_shaped_runtime_arn(client, world, operator):
    client.force_login(operator)
    queue = world.a.tenant.tier.celery_queue
    response = post_bindings(client, world.a.tenant, runtime_arn="arn:aws:nope", celery_queue=queue)
    assert response.status_code == 400
    errors = response.context["form"].errors
    assert errors["runtime_arn"][0].startswith("Not a valid value")
    assert errors["celery_queue"] == [f"{queue} is a tier's shared queue, not a dedicated one."]

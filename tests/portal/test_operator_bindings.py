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

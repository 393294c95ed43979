from django.core import checks
from django.db import models
from django.test.utils import isolate_apps

from tenants.checks import check_tenant_ownership, ownership_errors
from tenants.scoping import PlatformModel, TenantOwnedModel


def test_it_passes_for_the_projects_own_models():
    assert check_tenant_ownership() == []


@isolate_apps("agents")
def test_it_fails_for_a_model_in_a_tenant_app_without_the_base():
    class Forgotten(models.Model):
        class Meta:
            app_label = "agents"

    errors = ownership_errors([Forgotten])
    assert [e.id for e in errors] == ["tenants.E001"]
    assert errors[0].level == checks.ERROR


@isolate_apps("agents")
def test_it_accepts_tenant_owned_and_declared_platform_models():
    class Owned(TenantOwnedModel):
        class Meta:
            app_label = "agents"

    class Catalogue(PlatformModel):
        class Meta:
            app_label = "agents"

    assert ownership_errors([Owned, Catalogue]) == []

"""System check: every model in a tenant app declares how it is owned."""

from __future__ import annotations

from django.apps import apps
from django.conf import settings
from django.core.checks import Error, Tags, register

from tenants.scoping import PlatformModel, SharedOrTenantModel, TenantOwnedModel


@register(Tags.models)
def check_tenant_ownership(app_configs=None, **kwargs):
    return ownership_errors(apps.get_models())


def ownership_errors(models) -> list[Error]:
    errors = []
    tenant_apps = set(getattr(settings, "TENANT_APPS", []))
    for model in models:
        app_label = model._meta.app_config.name
        in_tenant_app = any(app_label == name or app_label.startswith(name + ".") for name in tenant_apps)
        if not in_tenant_app or model._meta.auto_created:
            continue
        if issubclass(model, TenantOwnedModel | SharedOrTenantModel | PlatformModel):
            continue
        errors.append(
            Error(
                f"{model._meta.label} is in a tenant app but inherits neither TenantOwnedModel nor PlatformModel.",
                hint="Tenant data must inherit tenants.scoping.TenantOwnedModel (scoped manager + RLS); "
                "platform data must say so with PlatformModel.",
                obj=model,
                id="tenants.E001",
            )
        )
    return errors

"""Switch a tenant's single sign-on off from the platform side.

For when the tenant's IdP is broken while SSO is required, so none of its admins
can sign in to do it themselves. Password sign-in works again at once.
"""

from django.core.management.base import BaseCommand, CommandError

from tenants.identity import sso
from tenants.models import Tenant
from tenants.services import ServiceError


class Command(BaseCommand):
    help = "Switch a tenant's single sign-on off (audited), e.g. when its identity provider is down."

    def add_arguments(self, parser):
        parser.add_argument("tenant_slug")
        parser.add_argument("--reason", required=True, help="Shown in the tenant's audit log.")

    def handle(self, *args, tenant_slug, reason, **options):
        tenant = Tenant.by_slug(tenant_slug)
        if tenant is None:
            raise CommandError(f"No tenant {tenant_slug!r}")
        try:
            connection = sso.force_disable_sso(tenant, reason=reason)
        except ServiceError as exc:
            raise CommandError(exc.text)
        if connection is None:
            self.stdout.write(f"{tenant.name} has no single sign-on.")
        else:
            self.stdout.write(f"Single sign-on of {tenant.name} is off; its members sign in with passwords again.")

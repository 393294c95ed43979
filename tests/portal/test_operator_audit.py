"""Operators' reads across tenants are audited (ARCHITECTURE.md §3), and no edit escapes the
audit: the Django admin shows tenants and tiers read-only, the console edits them (feature
grants included)."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from billing import invoices as inv
from billing.accounting import month_start
from portal.operator import services as operator_services
from tenants.models import Tenant, Tier
from tests.tenants.helpers import audit_entries, page_text, platform_audit_entries

pytestmark = pytest.mark.django_db
LAST_MONTH = month_start(month_start() - timedelta(days=1))


def reads(tenant=None) -> list:
    """The operator.viewed entries of `tenant`'s log, or of the platform's (tenant None)."""
    entries = platform_audit_entries(operator_services.READ_ACTION)
    return [e for e in entries if e.tenant_id == (tenant.pk if tenant else None)]


@pytest.mark.parametrize(
    ("path", "page"),
    [("/operator/tenants/bravo/", "tenant_detail"), ("/operator/billing/tenants/bravo/", "tenant_billing")],
)
def test_it_records_an_operators_read_of_one_tenant_in_that_tenants_log(client, world, operator, path, page):
    client.force_login(operator)
    assert client.get(path).status_code == 200
    [entry] = audit_entries(world.b.tenant, operator_services.READ_ACTION)
    assert (entry.actor, entry.after, entry.ip_address) == (operator, {"page": page}, "127.0.0.1")
    assert entry.target_repr == operator_services.PAGES[page]
    assert audit_entries(world.a.tenant, operator_services.READ_ACTION) == []


def test_the_tenants_admins_see_the_operators_visit_in_their_audit_log(client, world, operator):
    client.force_login(operator)
    client.get("/operator/tenants/bravo/")
    client.force_login(world.b.admin)
    body = page_text(client.get("/t/bravo/audit/"))
    assert "operator.viewed" in body and operator.email in body


def test_it_records_one_entry_per_operator_tenant_and_page_within_the_window(client, world, operator, monkeypatch):
    client.force_login(operator)
    for _ in range(3):
        client.get("/operator/tenants/bravo/")
    client.get("/operator/billing/tenants/bravo/")
    assert sorted(e.after["page"] for e in reads(world.b.tenant)) == ["tenant_billing", "tenant_detail"]
    monkeypatch.setattr(operator_services, "READ_WINDOW", timedelta(0))
    client.get("/operator/tenants/bravo/")
    assert len(reads(world.b.tenant)) == 3


@pytest.mark.parametrize(
    ("path", "page"),
    [
        ("/operator/guardrails/", "guardrails"),
        ("/operator/billing/", "billing"),
        ("/operator/billing/invoices/", "invoices"),
        ("/operator/audit/", "audit_log"),
        ("/api/v1/operator/billing/tenants/", "billing"),
        ("/api/v1/operator/invoices/", "invoices"),
    ],
)
def test_it_records_a_read_across_tenants_in_the_platform_log(client, world, operator, path, page):
    client.force_login(operator)
    assert client.get(path).status_code == 200
    [entry] = reads(None)
    assert (entry.actor, entry.after) == (operator, {"page": page})


@pytest.mark.parametrize(
    "path", ["/admin/tenants/membership/", "/admin/tenants/invitation/", "/admin/tenants/auditlog/"]
)
def test_it_records_a_read_of_every_tenants_rows_in_the_django_admin(client, world, operator, path):
    # The admin lists tenant-owned rows across tenants (tenants/admin.py), as the console does.
    client.force_login(operator)
    assert client.get(path).status_code == 200
    [entry] = reads(None)
    assert (entry.actor, entry.after) == (operator, {"page": "django_admin"})


@pytest.mark.parametrize("path", ["/operator/", "/operator/tiers/", "/admin/tenants/tenant/"])
def test_the_platforms_own_records_of_its_tenants_and_tiers_are_not_an_audited_read(client, world, operator, path):
    # Tenant and Tier rows are the platform's, not a tenant's data (portal/operator/services.py).
    client.force_login(operator)
    assert client.get(path).status_code == 200
    assert reads(None) == reads(world.a.tenant) == reads(world.b.tenant) == []


def test_the_console_audit_log_does_not_list_its_own_visit(client, world, operator):
    client.force_login(operator)
    assert list(client.get("/operator/audit/").context["page"]) == []


@pytest.mark.parametrize(
    ("suffix", "pages"),
    [("", ["invoice"]), ("export/?format=json", ["invoice", "invoice_export"])],
)
def test_it_records_a_read_of_one_invoice_in_its_tenants_log(client, world, operator, suffix, pages):
    # The console page and the API show the same invoice: one "invoice" entry in the window.
    invoice = inv.draft_invoice(world.b.tenant, LAST_MONTH)
    client.force_login(operator)
    assert client.get(f"/operator/billing/invoices/{invoice.pk}/{suffix}").status_code == 200
    assert client.get(f"/api/v1/operator/invoices/{invoice.pk}/").status_code == 200
    assert sorted(e.after["page"] for e in reads(world.b.tenant)) == pages
    assert reads(world.a.tenant) == []


# --- no unaudited edits ---------------------------------------------------------------------


def test_the_django_admin_shows_a_tenant_read_only_with_a_link_to_the_console(client, world, operator):
    tenant = world.b.tenant
    client.force_login(operator)
    page = client.get(f"/admin/tenants/tenant/{tenant.pk}/change/")
    assert page.status_code == 200
    assert 'href="/operator/tenants/bravo/"' in page.content.decode()
    response = client.post(
        f"/admin/tenants/tenant/{tenant.pk}/change/",
        {
            "slug": tenant.slug,
            "name": tenant.name,
            "tier": tenant.tier_id,
            "deployment_model": "silo",
            "region": tenant.region,
            "resource_bindings": '{"runtime_arn": "arn:aws:bedrock-agentcore:us-east-1:999999999999:runtime/x"}',
            "feature_grants": '["sso"]',
            "feature_revocations": "[]",
        },
    )
    assert response.status_code == 403
    tenant.refresh_from_db()
    assert (tenant.deployment_model, tenant.resource_bindings, tenant.feature_grants) == ("pool", {}, [])
    assert client.post("/admin/tenants/tenant/add/", {"slug": "x"}).status_code == 403


def test_the_django_admin_shows_a_tier_read_only(client, world, operator):
    tier = world.b.tenant.tier
    client.force_login(operator)
    page = client.get(f"/admin/tenants/tier/{tier.pk}/change/").content.decode()
    assert f'href="/operator/tiers/{tier.slug}/"' in page
    response = client.post(f"/admin/tenants/tier/{tier.pk}/change/", {"name": "Cheap", "monthly_price": "0"})
    assert response.status_code == 403
    assert Tier.objects.get(pk=tier.pk).name == tier.name


def settings_form(tenant, **changes) -> dict:
    data = {
        "name": tenant.name,
        "tier": str(tenant.tier_id),
        "deployment_model": tenant.deployment_model,
        "region": tenant.region,
    }
    return data | changes


def test_the_console_grants_and_revokes_features_audited(client, world, operator):
    tenant = world.b.tenant
    client.force_login(operator)
    included = tenant.tier.default_features[0]
    form = settings_form(tenant, feature_grants=["sso", "audit_export"], feature_revocations=[included])
    assert client.post("/operator/tenants/bravo/", form).status_code == 302
    tenant = Tenant.objects.get(pk=tenant.pk)
    assert (tenant.feature_grants, tenant.feature_revocations) == (["audit_export", "sso"], [included])
    [entry] = audit_entries(tenant, "tenant.features_changed")
    assert entry.actor == operator
    assert entry.before == {"feature_grants": [], "feature_revocations": []}
    assert entry.after == {"feature_grants": ["audit_export", "sso"], "feature_revocations": [included]}
    page = client.get("/operator/tenants/bravo/").content.decode()
    assert re.search(r'name="feature_grants" value="sso"[^>]* checked', page)
    assert not re.search(r'name="feature_grants" value="chat"[^>]* checked', page)


def test_the_console_offers_grants_the_tier_lacks_and_revocations_of_what_it_has(client, world, operator):
    client.force_login(operator)
    form = settings_form(world.b.tenant, feature_grants=["chat"], feature_revocations=["sso"])  # tier: chat, api
    response = client.post("/operator/tenants/bravo/", form)
    assert response.status_code == 400
    assert set(response.context["form"].errors) == {"feature_grants", "feature_revocations"}
    assert Tenant.objects.get(pk=world.b.tenant.pk).feature_grants == []


def test_the_console_refuses_a_feature_granted_and_revoked_at_once(client, world, operator):
    # A grant made before the tier came to include it is still shown, and so revocable too.
    Tenant.objects.filter(pk=world.b.tenant.pk).update(feature_grants=["chat"])
    client.force_login(operator)
    form = settings_form(world.b.tenant, feature_grants=["chat"], feature_revocations=["chat"])
    response = client.post("/operator/tenants/bravo/", form)
    assert response.status_code == 400
    assert "Granted and revoked at once: chat." in response.content.decode()
    assert Tenant.objects.get(pk=world.b.tenant.pk).feature_revocations == []
    assert audit_entries(world.b.tenant, "tenant.features_changed") == []

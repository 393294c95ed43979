"""The operator's billing console: margin maths in Decimal, server-side sort, invoices, staff only."""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal

import pytest
from django.urls import reverse

from billing import dashboards as d
from billing import invoices as inv
from billing.accounting import month_start
from billing.models import InvoiceStatus, TenantBudget
from tenants.context import all_tenants, tenant_context
from tenants.models import AuditLog
from tests import factories
from tests.billing.usage_helpers import at, record_throttle, record_usage, today

pytestmark = pytest.mark.django_db

THIS_MONTH = month_start()
LAST_MONTH = month_start(THIS_MONTH - dt.timedelta(days=1))


@pytest.fixture
def priced(world):
    """Alpha on a $100 plan with 1,000 tokens and $0.50 / 1k over; Bravo on a $20 plan that costs us more."""
    rich = factories.make_tier(
        "rich", monthly_price=Decimal("100.00"), included_tokens=1000, overage_price_per_1k_tokens=Decimal("0.5")
    )
    cheap = factories.make_tier("cheap", monthly_price=Decimal("20.00"), included_tokens=10**9)
    world.a.tenant.tier = rich
    world.a.tenant.save()
    world.b.tenant.tier = cheap
    world.b.tenant.save()
    record_usage(world.a.tenant, at(today()), input_tokens=3000, output_tokens=500, cost="0.123456")
    record_usage(world.b.tenant, at(today()), input_tokens=100, output_tokens=0, cost="25.005")
    record_throttle(world.b.tenant, at(today()))
    with tenant_context(world.b.tenant):
        TenantBudget.objects.create(monthly_budget=Decimal("20"), soft_alert_percent=80)
    return world


def rows(month=THIS_MONTH, **kwargs):
    with all_tenants("test"):
        return d.operator_rows(month, **kwargs)


def test_revenue_cost_and_gross_margin_are_exact_decimals(priced):
    alpha = next(r for r in rows() if r.tenant.slug == "alpha")
    assert alpha.tokens == 3500
    assert alpha.overage_tokens == 2500
    assert alpha.overage == Decimal("1.25")
    assert alpha.revenue == Decimal("101.25")
    assert alpha.cost_cents == Decimal("0.12")
    assert alpha.margin == Decimal("101.13")
    assert alpha.margin_percent == Decimal("99.9")
    bravo = next(r for r in rows() if r.tenant.slug == "bravo")
    assert bravo.revenue == Decimal("20.00")
    assert bravo.margin == Decimal("-5.01")  # 25.005 rounds half up to 25.01
    assert bravo.margin_percent == Decimal("-25.1")
    # The budget caps the tenant's bill: Bravo's is its $20 fee (overage is free on its plan),
    # 100 % of its $20 budget, yet no alert (the fee alone never raises it, as on the tenant's
    # own gauge) and never a stop. The $25.01 the usage cost us is ours.
    assert (bravo.throttled, bravo.budget_percent, bravo.budget_status) == (1, 100.0, "ok")
    totals = d.operator_totals(rows())
    assert totals.revenue == Decimal("121.25") and totals.margin == Decimal("96.12")


def test_the_table_sorts_on_the_server_in_both_directions(priced, operator, client):
    client.force_login(operator)
    url = reverse("operator:billing")
    by_margin = client.get(url, {"sort": "margin", "dir": "desc"})
    assert [r.tenant.slug for r in by_margin.context["page"].object_list] == ["alpha", "bravo"]
    ascending = client.get(url, {"sort": "margin", "dir": "asc"})
    assert [r.tenant.slug for r in ascending.context["page"].object_list] == ["bravo", "alpha"]
    throttled = client.get(url, {"sort": "throttled"})
    assert [r.tenant.slug for r in throttled.context["page"].object_list] == ["bravo", "alpha"]
    body = by_margin.content.decode()
    assert "$101.13" in body and "−$5.01" in body


@pytest.mark.parametrize("params", [{"sort": "drop table"}, {"month": "2026-13"}, {"month": "last"}])
def test_bad_sort_or_month_is_explained_not_a_500(priced, operator, client, params):
    client.force_login(operator)
    response = client.get(reverse("operator:billing"), params)
    assert response.status_code == 400
    assert response.context["error"]


def test_a_past_month_is_billed_from_that_months_rollups(priced, operator, client):
    record_usage(priced.a.tenant, at(LAST_MONTH), input_tokens=10_000, output_tokens=0, cost="1")
    last = {r.tenant.slug: r for r in rows(LAST_MONTH)}
    assert last["alpha"].tokens == 10_000
    assert last["bravo"].tokens == 0


def test_the_table_exports_as_csv(priced, operator, client):
    client.force_login(operator)
    response = client.get(reverse("operator:billing"), {"format": "csv", "sort": "name", "dir": "asc"})
    table = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(r["tenant"], r["revenue"], r["gross_margin"]) for r in table] == [
        ("alpha", "101.25", "101.13"),
        ("bravo", "20.00", "-5.01"),
    ]


def test_only_staff_see_the_billing_console(priced, client):
    client.force_login(priced.a.owner)
    assert client.get(reverse("operator:billing")).status_code == 404
    assert client.get(reverse("operator:billing_tenant", kwargs={"slug": "alpha"})).status_code == 404
    assert client.get(reverse("operator:billing_invoices")).status_code == 404


def test_the_tenant_drill_down_shows_that_tenants_dashboard(priced, operator, client):
    client.force_login(operator)
    response = client.get(reverse("operator:billing_tenant", kwargs={"slug": "alpha"}))
    assert response.status_code == 200
    assert response.context["board"].totals.tokens == 3500
    assert response.context["row"].margin == Decimal("101.13")
    assert client.get(reverse("operator:billing_tenant", kwargs={"slug": "nobody"})).status_code == 404


def test_the_operator_drafts_finalises_and_exports_invoices(priced, operator, client):
    record_usage(priced.a.tenant, at(LAST_MONTH), input_tokens=2000, output_tokens=0)
    client.force_login(operator)
    drafted = client.post(reverse("operator:billing_invoices_draft"), {"month": f"{LAST_MONTH:%Y-%m}"})
    assert drafted.status_code == 302
    with all_tenants("test"):
        from billing.models import Invoice

        invoice = Invoice.unscoped.get(tenant=priced.a.tenant, period=LAST_MONTH)
    page = client.get(reverse("operator:billing_invoice", kwargs={"invoice_id": invoice.pk}))
    assert page.status_code == 200 and page.context["can_finalise"]
    client.post(reverse("operator:billing_invoice_finalise", kwargs={"invoice_id": invoice.pk}))
    with all_tenants("test"):
        invoice.refresh_from_db()
        assert AuditLog.unscoped.filter(action="invoice.finalised", target_id=str(invoice.pk)).exists()
    assert invoice.status == InvoiceStatus.FINAL
    exported = client.get(
        reverse("operator:billing_invoices_export"), {"month": f"{LAST_MONTH:%Y-%m}", "format": "json"}
    )
    slugs = sorted(i["tenant"] for i in exported.json()["invoices"])
    assert slugs == ["alpha", "bravo"]
    one = client.get(reverse("operator:billing_invoice_export", kwargs={"invoice_id": invoice.pk}), {"format": "csv"})
    assert inv.invoice_number(invoice) in one.content.decode()


def test_finalising_the_open_month_is_refused_with_a_message(priced, operator, client):
    invoice = inv.draft_invoice(priced.a.tenant, THIS_MONTH)
    client.force_login(operator)
    response = client.post(reverse("operator:billing_invoice_finalise", kwargs={"invoice_id": invoice.pk}), follow=True)
    assert "not over yet" in response.content.decode()
    with tenant_context(priced.a.tenant):
        invoice.refresh_from_db()
    assert invoice.status == InvoiceStatus.DRAFT


@pytest.mark.parametrize(
    ("params", "allowed"),
    [
        ({"status": "bogus"}, "use one of: draft, final."),
        ({"month": "soon"}, f"use one of: {THIS_MONTH:%Y-%m}, {LAST_MONTH:%Y-%m}, "),
        ({"month": f"{LAST_MONTH:%Y-%m}", "status": "paid"}, "use one of: draft, final."),
    ],
)
def test_an_unknown_invoice_filter_is_a_400_that_lists_no_invoices(priced, operator, client, params, allowed):
    # Like every other operator list (listing.list_context): an empty list and why, never every row.
    drafts = [inv.draft_invoice(priced.a.tenant, LAST_MONTH), inv.draft_invoice(priced.b.tenant, LAST_MONTH)]
    client.force_login(operator)
    response = client.get(reverse("operator:billing_invoices"), params)
    assert response.status_code == 400
    page = response.content.decode()
    assert [number for number in map(inv.invoice_number, drafts) if number in page] == []
    assert 'id="invoice-table"' not in page
    assert 'id="list-error"' in page and allowed in page


def test_the_invoice_filters_narrow_the_list_and_keep_an_old_month_link_working(priced, operator, client):
    old = month_start(THIS_MONTH - dt.timedelta(days=800))
    alpha_old = inv.draft_invoice(priced.a.tenant, old)
    alpha_last = inv.draft_invoice(priced.a.tenant, LAST_MONTH)
    bravo_last = inv.draft_invoice(priced.b.tenant, LAST_MONTH)
    client.force_login(operator)

    def listed(**params):
        response = client.get(reverse("operator:billing_invoices"), params)
        assert response.status_code == 200
        return sorted(i.pk for i in response.context["invoices"])

    assert listed() == sorted(i.pk for i in (alpha_old, alpha_last, bravo_last))
    assert listed(month=f"{LAST_MONTH:%Y-%m}") == sorted([alpha_last.pk, bravo_last.pk])
    assert listed(month=f"{old:%Y-%m}") == [alpha_old.pk]  # older than the twelve months offered
    assert listed(month=f"{LAST_MONTH:%Y-%m}", status="final") == []
    assert listed(status="draft", q="bravo") == [bravo_last.pk]


# --- the operator API ----------------------------------------------------------------------------


def test_the_operator_api_lists_every_tenants_margin_sorted(priced, operator, client):
    client.force_login(operator)
    body = client.get("/api/v1/operator/billing/tenants/", {"sort": "margin", "dir": "asc"}).json()
    assert [r["tenant"] for r in body["results"]] == ["bravo", "alpha"]
    alpha = body["results"][1]
    assert (alpha["revenue"], alpha["cost"], alpha["gross_margin"], alpha["margin_percent"]) == (
        "101.25",
        "0.12",
        "101.13",
        "99.9",
    )
    assert body["gross_margin"] == "96.12"


def test_the_operator_api_lists_invoices_and_one_invoice(priced, operator, client):
    record_usage(priced.a.tenant, at(LAST_MONTH), input_tokens=2000, output_tokens=0)
    invoice = inv.draft_invoice(priced.a.tenant, LAST_MONTH)
    inv.draft_invoice(priced.b.tenant, LAST_MONTH)
    client.force_login(operator)
    listed = client.get("/api/v1/operator/invoices/", {"month": f"{LAST_MONTH:%Y-%m}", "status": "draft"}).json()
    assert sorted(i["tenant"] for i in listed["results"]) == ["alpha", "bravo"]
    one = client.get(f"/api/v1/operator/invoices/{invoice.pk}/").json()
    assert one["number"] == inv.invoice_number(invoice) and one["total"] == "100.50"  # 1,000 over at $0.50 / 1k


def test_the_operator_api_is_404_for_non_staff_and_for_bearer_tokens(priced, operator, client):
    from tenants.identity import tokens
    from tests.portal.helpers import problem

    client.force_login(priced.a.owner)
    problem(client.get("/api/v1/operator/billing/tenants/"), 404)
    problem(client.get("/api/v1/operator/invoices/"), 404)
    client.logout()
    factories.add_member(priced.a.tenant, operator, "owner")
    token = tokens.issue_user_token(operator, priced.a.tenant)
    problem(client.get("/api/v1/operator/billing/tenants/", HTTP_AUTHORIZATION=f"Bearer {token}"), 404)


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/v1/operator/billing/tenants/", {"month": "2026-13"}, "month"),
        ("/api/v1/operator/billing/tenants/", {"sort": "secret"}, "sort"),
        ("/api/v1/operator/billing/tenants/", {"dir": "sideways"}, "dir"),
        ("/api/v1/operator/invoices/", {"month": "soon"}, "month"),
        ("/api/v1/operator/invoices/", {"status": "paid"}, "status"),
    ],
)
def test_the_operator_api_answers_bad_parameters_with_a_400_problem(operator, client, world, path, params, field):
    from tests.portal.helpers import validation_problem

    client.force_login(operator)
    assert field in validation_problem(client.get(path, params))["errors"]


HARD_STOP_BADGE = (
    '<span class="badge budget-stop" title="A budget of $0.00: every paid turn is refused">$0.00 — hard stop</span>'
)


def test_a_budget_of_zero_is_shown_as_the_hard_stop_it_is(priced, operator, client):
    # A budget of 0 refuses every paid turn (since af9b584 the tenant's own pages say
    # "Hard stop reached"); the console said "No budget", as if spending were unlimited.
    with tenant_context(priced.a.tenant):
        TenantBudget.objects.create(monthly_budget=Decimal("0"), soft_alert_percent=80)
    alpha = next(r for r in rows() if r.tenant.slug == "alpha")
    assert (alpha.budget, alpha.budget_status) == (Decimal("0"), "stop")
    # Sorted by budget it comes first, above Bravo's 100 %: nothing at all may be spent.
    assert [r.tenant.slug for r in rows(sort="budget")] == ["alpha", "bravo"]

    client.force_login(operator)
    table = client.get(reverse("operator:billing"), {"sort": "name", "dir": "asc"}).content.decode()
    tenant_page = client.get(reverse("operator:billing_tenant", kwargs={"slug": "alpha"})).content.decode()
    for body in (table, tenant_page):
        assert "No budget" not in body
        assert HARD_STOP_BADGE in body
    exported = client.get(reverse("operator:billing"), {"format": "csv", "sort": "name", "dir": "asc"})
    alpha_csv = next(r for r in csv.DictReader(io.StringIO(exported.content.decode())) if r["tenant"] == "alpha")
    assert (alpha_csv["budget"], alpha_csv["budget_status"]) == ("0.00", "stop")


def test_a_tenant_without_a_budget_still_has_no_budget(priced, operator, client):
    alpha = next(r for r in rows() if r.tenant.slug == "alpha")
    assert (alpha.budget, alpha.budget_status) == (None, "none")
    client.force_login(operator)
    tenant_page = client.get(reverse("operator:billing_tenant", kwargs={"slug": "alpha"})).content.decode()
    assert '<span class="badge budget-none">No budget</span>' in tenant_page


@pytest.mark.parametrize("name", ["\t=1+2", "\r=1+2", "=1+2", "@SUM(A1)"])
def test_the_csv_export_quotes_a_tenant_name_a_spreadsheet_would_run(priced, operator, client, name):
    # Some spreadsheets drop a leading tab or carriage return before they look for a formula.
    priced.a.tenant.name = name
    priced.a.tenant.save()
    client.force_login(operator)
    response = client.get(reverse("operator:billing"), {"format": "csv", "sort": "name", "dir": "asc"})
    table = {r["tenant"]: r for r in csv.DictReader(io.StringIO(response.content.decode(), newline=""))}
    assert table["alpha"]["name"] == "'" + name
    assert table["bravo"]["name"] == "Bravo Inc"


def test_it_shows_the_operator_the_tenants_soft_alert_on_overage_past_the_share_of_budget_above_the_fee(priced):
    # Alpha: $100 fee, $1.25 of overage. A $102 budget alerts at 80 % of its $2 above the fee ($1.60):
    # not yet; at $101.50, 80 % of $1.50 ($1.20) is passed.
    with tenant_context(priced.a.tenant):
        TenantBudget.objects.create(monthly_budget=Decimal("102.00"), soft_alert_percent=80)
    assert next(r for r in rows() if r.tenant.slug == "alpha").budget_status == "ok"
    with tenant_context(priced.a.tenant):
        TenantBudget.objects.update(monthly_budget=Decimal("101.50"))
    assert next(r for r in rows() if r.tenant.slug == "alpha").budget_status == "alert"

"""The tenant's usage pages: who may see them, the CSV export, the drill-down, invoices; bad input."""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal

import pytest
from django.urls import reverse

from billing import invoices as inv
from billing.accounting import month_start
from tenants.context import tenant_context
from tests.billing.usage_helpers import at, record_usage, today

pytestmark = pytest.mark.django_db

LAST_MONTH = month_start(month_start() - dt.timedelta(days=1))


def url(name: str, slug: str = "alpha", **kwargs) -> str:
    return reverse(f"billing:{name}", kwargs={"tenant_slug": slug, **kwargs})


@pytest.mark.parametrize(("role", "status"), [("owner", 200), ("admin", 200), ("billing", 200), ("member", 403)])
def test_the_dashboard_is_for_owners_admins_and_the_billing_role(world, client, role, status):
    client.force_login(world.a.user(role))
    assert client.get(url("dashboard")).status_code == status
    assert client.get(url("export_csv")).status_code == status
    assert client.get(url("invoices")).status_code == status


def test_outsiders_and_other_tenants_get_404(world, client):
    client.force_login(world.outsider)
    assert client.get(url("dashboard")).status_code == 404
    client.force_login(world.b.owner)
    assert client.get(url("dashboard")).status_code == 404


def test_the_dashboard_shows_the_windows_numbers_and_the_charts_data(world, client):
    record_usage(world.a.tenant, at(today()), user=world.a.member, input_tokens=1_234_000, output_tokens=0, cost="1.5")
    record_usage(world.b.tenant, at(today()), input_tokens=9_999_999, cost="77")
    client.force_login(world.a.billing)
    response = client.get(url("dashboard"), {"range": "30d", "grouping": "week"})
    assert response.status_code == 200
    body = response.content.decode()
    assert "1.2M" in body and "Alpha Member" in body
    assert "$1.50" not in body  # the price book's cost is the provider's, not the tenant's
    # What the tenant is billed this month: the fee plus overage past the 1,000 included tokens.
    bill = response.context["board"].outlook.bill
    assert (bill.fee, bill.tokens) == (Decimal("100.00"), 1_234_000)
    assert 'id="bill-stat"' in body
    assert 'id="chart-usage"' in body and "chart.umd.min.js" in body
    assert "9,999,999" not in body and "$77" not in body
    assert response.context["board"].totals.tokens == 1_234_000


def test_each_chart_says_why_it_is_empty(world, client):
    """billing.js draws a chart's `empty` text instead of zero axes; it must say what is missing."""
    client.force_login(world.a.billing)
    charts = client.get(url("dashboard")).context["charts"]
    assert {name: chart["empty"] for name, chart in charts.items()} == {
        "usage": "No usage yet",
        "latency": "No usage yet",
        "refusals": "No usage yet",
    }
    record_usage(world.a.tenant, at(today()))
    charts = client.get(url("dashboard")).context["charts"]
    assert charts["refusals"]["empty"] == "Nothing was throttled or blocked in this period"
    assert charts["latency"]["empty"] == "No latency was recorded in this period"


@pytest.mark.parametrize(
    "params", [{"from": "2026-02-30"}, {"grouping": "hourly"}, {"range": "\x00"}, {"from": "9" * 500}]
)
def test_bad_parameters_are_explained_on_the_page_not_a_500(world, client, params):
    client.force_login(world.a.owner)
    response = client.get(url("dashboard"), params)
    assert response.status_code == 400
    assert response.context["error"]
    assert response.context["window"].days == 30  # the page still shows the default period


def test_csv_export_has_one_row_per_bucket_with_the_same_numbers(world, client):
    record_usage(world.a.tenant, at(today()), input_tokens=300, output_tokens=200, cost="0.12345678")
    record_usage(world.a.tenant, at(today() - dt.timedelta(days=2)), input_tokens=10, output_tokens=5, cost="0.5")
    client.force_login(world.a.admin)
    response = client.get(url("export_csv"), {"range": "30d"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(rows) == 30
    by_day = {r["period_start"]: r for r in rows}
    assert by_day[today().isoformat()]["tokens"] == "500"
    assert "cost" not in rows[0]  # the price book's cost is the provider's, not the tenant's
    assert "0.12345678" not in response.content.decode()
    assert by_day[(today() - dt.timedelta(days=2)).isoformat()]["input_tokens"] == "10"
    assert by_day[(today() - dt.timedelta(days=1)).isoformat()]["turns"] == "0"
    assert sum(int(r["tokens"]) for r in rows) == 515


def test_csv_export_by_person_and_its_bad_input(world, client):
    record_usage(world.a.tenant, at(today()), user=world.a.owner, input_tokens=70, output_tokens=0)
    client.force_login(world.a.owner)
    rows = list(csv.DictReader(io.StringIO(client.get(url("export_csv"), {"dataset": "user"}).content.decode())))
    assert [(r["user"], r["tokens"]) for r in rows] == [("Alpha Owner", "70")]
    assert client.get(url("export_csv"), {"dataset": "secrets"}).status_code == 400
    assert client.get(url("export_csv"), {"to": "soon"}).status_code == 400


def test_the_drill_down_pages_through_raw_events_newest_first(world, client):
    for n in range(55):
        record_usage(world.a.tenant, at(today(), hour=0) + dt.timedelta(minutes=n), input_tokens=n + 1, output_tokens=0)
    record_usage(world.a.tenant, at(today()), model="other-model", input_tokens=999, output_tokens=0)
    client.force_login(world.a.owner)
    first = client.get(url("events"), {"range": "month", "model": "offline-small"})
    assert first.status_code == 200
    page = first.context["page"]
    assert len(page.events) == 50 and page.has_next
    assert page.events[0].input_tokens == 55
    second = client.get(url("events"), {"range": "month", "model": "offline-small", "page": "2"})
    assert [e.input_tokens for e in second.context["page"].events] == [5, 4, 3, 2, 1]
    assert not second.context["page"].has_next
    assert client.get(url("events"), {"page": "x", "user": "nobody"}).status_code == 400


def test_the_drill_down_names_the_tenants_own_people_only(world, client, operator):
    record_usage(world.a.tenant, at(today()), user=world.a.member)
    client.force_login(world.a.billing)
    own = client.get(url("events"), {"user": world.a.member.pk})
    assert own.context["filter_user_name"] == "Alpha Member"
    assert [row["user_name"] for row in own.context["rows"]] == ["Alpha Member"]
    for stranger in (world.b.owner, world.outsider, operator):
        response = client.get(url("events"), {"user": stranger.pk})
        assert response.status_code == 200
        assert response.context["filter_user_name"] == "—"
        assert stranger.display_name not in response.content.decode()


def test_tenant_admins_see_their_own_invoices_and_not_anothers(world, client):
    record_usage(world.a.tenant, at(LAST_MONTH), input_tokens=2000, output_tokens=0)
    mine = inv.draft_invoice(world.a.tenant, LAST_MONTH)
    theirs = inv.draft_invoice(world.b.tenant, LAST_MONTH)
    client.force_login(world.a.billing)
    listing = client.get(url("invoices"))
    assert [i.pk for i in listing.context["invoices"]] == [mine.pk]
    detail = client.get(url("invoice", invoice_id=mine.pk))
    assert detail.status_code == 200 and inv.invoice_number(mine) in detail.content.decode()
    assert client.get(url("invoice", invoice_id=theirs.pk)).status_code == 404
    assert client.get(url("invoice_export", invoice_id=theirs.pk)).status_code == 404
    exported = client.get(url("invoice_export", invoice_id=mine.pk), {"format": "json"})
    assert exported.status_code == 200 and exported.json()["invoices"][0]["tokens"] == 2000
    assert client.get(url("invoice_export", invoice_id=mine.pk), {"format": "xml"}).status_code == 400


def test_the_sidebar_links_the_dashboard_for_roles_that_may_see_it(world, client):
    client.force_login(world.a.billing)
    assert url("dashboard") in client.get(reverse("tenants:overview", kwargs={"tenant_slug": "alpha"})).content.decode()
    client.force_login(world.a.member)
    assert (
        url("dashboard")
        not in client.get(reverse("tenants:overview", kwargs={"tenant_slug": "alpha"})).content.decode()
    )


def test_seed_usage_is_consistent_and_idempotent(db, monkeypatch):
    from django.core.management import call_command

    from billing import seed

    monkeypatch.setattr(seed, "DAYS", 6)  # the demo's two months, shortened

    from billing.models import UsageDaily, UsageEvent
    from billing.seed import seed_usage
    from tenants.models import Tenant

    call_command("seed_demo", stdout=io.StringIO())
    acme = Tenant.objects.get(slug="acme")
    with tenant_context(acme):
        events = UsageEvent.objects.count()
        from django.db.models import Sum

        raw = UsageEvent.objects.aggregate(t=Sum("input_tokens"), c=Sum("cost"))
        rolled = UsageDaily.objects.aggregate(t=Sum("input_tokens"), c=Sum("cost"), n=Sum("turns"))
    assert events > 100
    assert (raw["t"], raw["c"], events) == (rolled["t"], rolled["c"], rolled["n"])
    assert seed_usage() == 0  # a second run writes nothing
    with tenant_context(acme):
        assert UsageEvent.objects.count() == events
    # Every demo budget caps a bill above its plan's fee, with room for overage.
    from billing import spend
    from billing.models import TenantBudget

    for tenant in Tenant.objects.select_related("tier").filter(slug__in=["globex", "initech"]):
        with tenant_context(tenant):
            budget = TenantBudget.objects.get().monthly_budget
            assert spend.budget_rule(tenant.tier, budget) == spend.BudgetRule.CAPS_OVERAGE, tenant.slug
            assert spend.budget_token_ceiling(tenant.tier, budget) > tenant.tier.included_tokens
    # No demo month's bill reaches its budget nor its tokens the quota, so no seeded refusal
    # may be by either: the dashboard would show budget refusals beside a bill under budget.
    from billing.models import LimitKind, ThrottleEvent

    for tenant in Tenant.objects.filter(slug__in=seed.PROFILES):
        with tenant_context(tenant):
            kinds = set(ThrottleEvent.objects.values_list("kind", flat=True))
        assert not kinds & {LimitKind.BUDGET, LimitKind.QUOTA}, (tenant.slug, kinds)


def test_csv_export_by_person_quotes_a_name_that_starts_like_a_formula_after_a_tab(world, client):
    world.a.member.full_name = "\t=HYPERLINK(1)"
    world.a.member.save()
    record_usage(world.a.tenant, at(today()), user=world.a.member, input_tokens=70, output_tokens=0)
    client.force_login(world.a.owner)
    response = client.get(url("export_csv"), {"dataset": "user"})
    rows = list(csv.DictReader(io.StringIO(response.content.decode(), newline="")))
    assert [r["user"] for r in rows] == ["'\t=HYPERLINK(1)"]

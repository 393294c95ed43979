"""Usage and invoices over the REST API: the dashboard's numbers, problem JSON on bad input, scopes."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.db.models import Sum

from billing import invoices as inv
from billing.accounting import month_start
from billing.models import UsageEvent
from tenants.context import tenant_context
from tenants.identity import tokens
from tests.billing.usage_helpers import at, record_usage, today
from tests.portal.helpers import problem, validation_problem

pytestmark = pytest.mark.django_db

LAST_MONTH = month_start(month_start() - dt.timedelta(days=1))


def api(rest: str, slug: str = "alpha") -> str:
    return f"/api/v1/tenants/{slug}/{rest}"


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


@pytest.fixture
def usage(world):
    record_usage(world.a.tenant, at(today()), user=world.a.owner, input_tokens=1000, output_tokens=250, cost="0.40")
    record_usage(
        world.a.tenant,
        at(today() - dt.timedelta(days=3)),
        user=world.a.member,
        input_tokens=10,
        output_tokens=0,
        cost="0.02",
    )
    record_usage(world.b.tenant, at(today()), input_tokens=999_999, cost="99")
    return world


def test_the_summary_equals_the_raw_events_and_carries_the_month_gauges(client, usage):
    client.force_login(usage.a.billing)
    body = client.get(api("usage/summary/"), {"range": "30d"}).json()
    with tenant_context(usage.a.tenant):
        raw = UsageEvent.objects.aggregate(i=Sum("input_tokens"), o=Sum("output_tokens"), c=Sum("cost"))
    assert body["totals"]["input_tokens"] == raw["i"]
    assert body["totals"]["tokens"] == raw["i"] + raw["o"]
    assert body["totals"]["turns"] == 2
    assert body["month"]["tokens"]["limit"] is not None
    assert body["month"]["budget"]["state"] == "none"
    # Money is the tenant's bill (plan fee + token overage), never the price book's cost.
    assert "cost" not in body["totals"]
    assert str(raw["c"].normalize()) not in str(body)
    assert body["month"]["bill"] == {"tokens": 1260, "fee": "100.00", "overage": "0.00", "total": "100.00"}


def test_the_timeseries_buckets_by_week_and_includes_empty_ones(client, usage):
    client.force_login(usage.a.owner)
    body = client.get(api("usage/timeseries/"), {"range": "90d", "grouping": "week"}).json()
    assert body["grouping"] == "week"
    assert len(body["buckets"]) in (13, 14, 15)
    assert sum(b["totals"]["tokens"] for b in body["buckets"]) == 1260
    assert all(dt.date.fromisoformat(b["start"]).weekday() == 0 for b in body["buckets"])


def test_the_breakdown_by_person(client, usage):
    client.force_login(usage.a.admin)
    body = client.get(api("usage/breakdown/"), {"by": "user"}).json()
    assert [(r["label"], r["totals"]["tokens"]) for r in body["results"]] == [
        ("Alpha Owner", 1250),
        ("Alpha Member", 10),
    ]


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("usage/summary/", {"from": "2026-02-31"}, "from"),
        ("usage/summary/", {"to": "last tuesday"}, "to"),
        ("usage/timeseries/", {"grouping": "fortnight"}, "grouping"),
        ("usage/timeseries/", {"from": "2026-05-02", "to": "2026-05-01"}, "to"),
        ("usage/timeseries/", {"range": "\x00"}, "range"),
        ("usage/breakdown/", {"by": "planet"}, "by"),
        ("usage/breakdown/", {}, "by"),
        ("invoices/", {"status": "paid"}, "status"),
    ],
)
def test_bad_parameters_answer_a_400_problem_naming_the_field(client, world, path, params, field):
    client.force_login(world.a.owner)
    body = validation_problem(client.get(api(path), params))
    assert field in body["errors"]


def test_members_without_the_billing_role_get_403_and_outsiders_404(client, world):
    client.force_login(world.a.member)
    problem(client.get(api("usage/summary/")), 403)
    client.force_login(world.a.owner)
    problem(client.get(api("usage/summary/", slug="bravo")), 404)


def test_invoices_list_and_detail_are_the_tenants_own(client, usage):
    record_usage(usage.a.tenant, at(LAST_MONTH), input_tokens=3000)
    mine = inv.draft_invoice(usage.a.tenant, LAST_MONTH)
    theirs = inv.draft_invoice(usage.b.tenant, LAST_MONTH)
    client.force_login(usage.a.billing)
    listed = client.get(api("invoices/")).json()
    assert [i["id"] for i in listed["results"]] == [mine.pk]
    detail = client.get(api(f"invoices/{mine.pk}/")).json()
    assert detail["number"] == inv.invoice_number(mine)
    assert detail["period"] == f"{LAST_MONTH:%Y-%m}"
    assert Decimal(detail["total"]) == mine.total
    assert [line["kind"] for line in detail["lines"]] == ["base_fee", "token_overage"]
    problem(client.get(api(f"invoices/{theirs.pk}/")), 404)
    problem(client.get(api("invoices/not-a-number/")), 404)


def test_a_token_needs_the_billing_read_scope(client, usage):
    narrow = tokens.issue_user_token(usage.a.admin, usage.a.tenant, scopes=frozenset({"tenant:read"}))
    body = problem(client.get(api("usage/summary/"), **bearer(narrow)), 403)
    assert "billing:read" in body["detail"]
    full = tokens.issue_user_token(usage.a.admin, usage.a.tenant)
    assert client.get(api("usage/summary/"), **bearer(full)).status_code == 200


def test_the_endpoints_are_in_the_openapi_schema(client, world):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    for path in ("usage/summary/", "usage/timeseries/", "usage/breakdown/", "invoices/", "invoices/{id}/"):
        assert f"/api/v1/tenants/{{tenant_slug}}/{path}" in schema["paths"], path

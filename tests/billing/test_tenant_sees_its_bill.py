"""Tenants see what they are billed (plan fee + token overage), tokens and turns — never
the price book's cost of their usage, which is the provider's and commercially
sensitive. Operators keep the cost (with revenue and margin).

One usage event whose cost is a number that appears nowhere else (0.98765) is looked for
on every tenant-facing page, export and API answer, and on the operator's pages."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing.accounting import month_start
from billing.models import MonthlyUsage, TenantBudget
from tenants.context import tenant_context
from tenants.identity.tokens import issue_user_token
from tests.billing.usage_helpers import at, record_usage, today

pytestmark = pytest.mark.django_db

COST = "0.98765"
# How the cost would read anywhere: as stored, in an API decimal, and as the pages round it.
COST_FIGURES = ("0.98765", "0.9877", "0.9876")


@pytest.fixture
def usage(world):
    tier = world.a.tenant.tier
    tier.overage_price_per_1k_tokens = Decimal("0.50")  # $100 fee, 1,000 tokens included
    tier.save()
    record_usage(world.a.tenant, at(today()), user=world.a.member, input_tokens=3000, output_tokens=1000, cost=COST)
    with tenant_context(world.a.tenant):
        MonthlyUsage.objects.create(
            month=month_start(), user_key=0, tokens_used=4000, cost_used=Decimal(COST), cost_reserved=Decimal(COST)
        )
        TenantBudget.objects.create(monthly_budget=Decimal("250.00"))
    return world


def assert_no_cost(text: str) -> None:
    for figure in COST_FIGURES:
        assert figure not in text, figure


def test_it_shows_tenants_no_price_book_cost_on_any_billing_page(client, usage):
    client.force_login(usage.a.owner)
    pages = [
        "/t/alpha/billing/?range=30d",
        "/t/alpha/billing/?range=month&grouping=month",
        "/t/alpha/billing/events/?range=30d",
        "/t/alpha/billing/limits/",
    ] + [f"/t/alpha/billing/export.csv?range=30d&dataset={name}" for name in ("timeseries", "model", "agent", "user")]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
        assert_no_cost(response.content.decode())
    dashboard = client.get(pages[0]).content.decode()
    # The bill instead: $100 fee + 3,000 tokens over the 1,000 included at $0.50 per 1k.
    assert "$101.50" in dashboard and "Plan fee $100.00 + token overage $1.50" in dashboard
    assert '"cost"' not in dashboard  # no cost variant in the chart's data
    events = client.get(pages[2]).content.decode()
    assert "3,000" in events and ">Cost<" not in events


def test_it_gives_tenant_tokens_the_bill_not_the_cost(client, usage):
    token = issue_user_token(usage.a.owner, usage.a.tenant)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    base = "/api/v1/tenants/alpha/usage/"
    answers = [
        client.get(base + "summary/", {"range": "30d"}, **headers),
        client.get(base + "timeseries/", {"range": "30d"}, **headers),
        *(client.get(base + "breakdown/", {"range": "30d", "by": by}, **headers) for by in ("model", "agent", "user")),
    ]
    for answer in answers:
        assert answer.status_code == 200
        assert_no_cost(answer.content.decode())
        assert '"cost"' not in answer.content.decode()
    month = answers[0].json()["month"]
    assert month["bill"] == {"tokens": 4000, "fee": "100.00", "overage": "1.50", "total": "101.50"}
    assert (month["budget"]["used"], month["budget"]["limit"]) == ("101.50000000", "250.00000000")


def test_the_operator_keeps_the_cost(client, usage, operator):
    client.force_login(operator)
    page = client.get("/operator/billing/tenants/alpha/?range=30d").content.decode()
    assert "$0.9877" in page  # the cost of the usage, beside the tenant's own dashboard
    assert '"cost"' in page  # and the chart's cost variant
    table = client.get("/operator/billing/").content.decode()
    assert "$0.99" in table  # cost and margin per tenant, to the cent

"""Each limit has one name, the same on every page that shows it: the limits page, the usage
dashboard, the tenant overview, the refusals a limit records (and, in tests/billing/test_limits.py,
the message a refused person reads)."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.utils import timezone

from billing.models import LimitKind
from tests.billing.usage_helpers import at, record_throttle

pytestmark = pytest.mark.django_db

NAMES = ["Requests per minute", "Tokens per minute", "Concurrent sessions", "Monthly token quota", "Monthly budget"]
# What the pages called the same limits before they shared one name.
OTHER_NAMES = [
    "Messages per minute",
    "Answers in progress at once",
    "Included tokens",
    "Token quota ·",
    "Budget ·",
    "Tokens per month",
    "Your requests per minute",
    "Your monthly tokens",
]


def text_of(response) -> str:
    """The page's words, without markup and extra whitespace."""
    assert response.status_code == 200
    body = re.sub(r"<script.*?</script>|<[^>]+>", " ", response.content.decode(), flags=re.S)
    return re.sub(r"\s+", " ", body)


def test_the_refusal_kinds_are_called_by_the_limit_names():
    assert [LimitKind(k).label for k in ("rpm", "tpm", "concurrency", "quota", "budget")] == NAMES
    assert LimitKind.USER_RPM.label == "Requests per minute (per person)"
    assert LimitKind.USER_TOKENS.label == "Monthly token quota (per person)"


@pytest.mark.parametrize("page", ["/t/alpha/", "/t/alpha/billing/limits/"])
def test_the_overview_and_the_limits_page_name_the_plans_limits_alike(client, world, page):
    client.force_login(world.a.owner)
    text = text_of(client.get(page))
    for name in ["Requests per minute", "Tokens per minute", "Concurrent sessions", "Monthly token quota"]:
        assert name in text, f"{name!r} missing on {page}"
    for other in OTHER_NAMES:
        assert other not in text, f"{other!r} on {page}"


def test_the_limits_page_names_the_per_person_limits_and_the_refusals_alike(client, world):
    record_throttle(world.a.tenant, timezone.now(), user=world.a.member, kind=LimitKind.USER_TOKENS)
    record_throttle(world.a.tenant, timezone.now(), user=world.a.member, kind=LimitKind.CONCURRENCY)
    client.force_login(world.a.owner)

    text = text_of(client.get("/t/alpha/billing/limits/"))

    assert "Limits per person" in text
    assert "Person Requests per minute Monthly token quota" in text  # the per-person table's columns
    assert "Monthly token quota (per person)" in text and "Concurrent sessions" in text  # the refusals
    assert "Monthly budget" in text


def test_the_dashboard_names_the_quota_the_budget_and_the_refusals_alike(client, world):
    today = timezone.now().astimezone(dt.UTC).date()
    record_throttle(world.a.tenant, at(today), user=world.a.member, kind=LimitKind.USER_RPM)
    client.force_login(world.a.billing)

    text = text_of(client.get("/t/alpha/billing/", {"range": "30d"}))

    assert "Monthly token quota ·" in text and "Monthly budget ·" in text
    assert "Requests per minute (per person)" in text  # the throttled table, by limit
    for other in OTHER_NAMES:
        assert other not in text, f"{other!r} on the dashboard"


def test_the_operators_tiers_and_tier_form_name_the_limits_alike(client, world, operator):
    client.force_login(operator)

    tiers = text_of(client.get("/operator/tiers/"))
    form = text_of(client.get(f"/operator/tiers/{world.a.tenant.tier.slug}/"))

    for name in ["Requests per minute", "Tokens per minute", "Concurrent sessions", "Monthly token quota"]:
        assert name in tiers, f"{name!r} missing on the tiers page"
        assert name in form, f"{name!r} missing on the tier form"
    for other in [*OTHER_NAMES, "req/min", "tokens/min"]:
        assert other not in tiers, f"{other!r} on the tiers page"
        assert other not in form, f"{other!r} on the tier form"
    for other in ["included usage", "included tokens"]:  # in a sentence, any case
        assert other not in tiers.lower(), f"{other!r} on the tiers page"
        assert other not in form.lower(), f"{other!r} on the tier form"
    assert not re.search(r"\d sessions", tiers), "a limit called just 'sessions' on the tiers page"


def test_the_operators_billing_table_names_the_budget_as_the_tenant_pages_do(client, world, operator):
    client.force_login(operator)

    text = text_of(client.get("/operator/billing/"))

    assert "Monthly budget" in text


def test_the_operators_tenant_page_names_the_tenants_limits_alike(client, world, operator):
    client.force_login(operator)

    text = text_of(client.get(f"/operator/tenants/{world.a.tenant.slug}/"))

    for name in ["Requests per minute", "Tokens per minute", "Concurrent sessions", "Monthly token quota"]:
        assert name in text, f"{name!r} missing on the operator's tenant page"
    for other in [*OTHER_NAMES, "Requests / min", "Tokens / min"]:
        assert other not in text, f"{other!r} on the operator's tenant page"


# What the invoice, the dashboard and the API called the monthly token quota before they
# used its one name.
QUOTA_OTHER_NAMES = [
    r"included tokens",
    r"over the included",
    r"the included amount",
    r"includes [\d,]+ tokens",
    r"[\d.,]+\s*[km]? included",  # the dashboard's gauge: "3.5K of 1K included"
]


def test_an_invoice_and_its_pages_call_the_plans_tokens_the_monthly_token_quota(client, world, operator):
    from billing.accounting import month_start
    from billing.invoices import draft_invoice
    from tests.billing.usage_helpers import record_usage

    tier = world.a.tenant.tier
    tier.included_tokens, tier.overage_allowed = 1000, True
    tier.save()
    world.a.tenant.refresh_from_db()
    last_month = month_start(month_start() - dt.timedelta(days=1))
    record_usage(world.a.tenant, at(last_month), input_tokens=3500)
    invoice = draft_invoice(world.a.tenant, last_month)

    client.force_login(world.a.owner)
    pages = {
        "invoice": text_of(client.get(f"/t/alpha/billing/invoices/{invoice.pk}/")),
        "invoices": text_of(client.get("/t/alpha/billing/invoices/")),
        "dashboard": text_of(client.get("/t/alpha/billing/")),
    }
    client.force_login(operator)
    pages["operator invoice"] = text_of(client.get(f"/operator/billing/invoices/{invoice.pk}/"))
    pages["operator billing"] = text_of(client.get(f"/operator/billing/tenants/{world.a.tenant.slug}/"))

    assert "monthly token quota of 1,000" in pages["invoice"]  # the overage line
    assert "beyond your plan's monthly token quota" in pages["invoice"]  # the sheet's foot
    for page, text in pages.items():
        for other in QUOTA_OTHER_NAMES:
            assert not re.search(other, text.lower()), f"{other!r} on the {page} page"


def test_the_api_describes_the_months_tokens_against_the_monthly_token_quota(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    month = schema["components"]["schemas"]["Month"]["properties"]["tokens"]

    assert "monthly token quota" in month["description"]
    assert "included" not in month["description"]

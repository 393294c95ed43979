"""A tenant's spend is its bill (plan fee + token overage), and its budget caps that bill:
as tokens, a ceiling that admission enforces with the quota (billing.spend)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pytest

from billing import spend
from billing.invoices import invoice_amounts


@dataclass
class Plan:
    monthly_price: Decimal = Decimal("499.00")
    included_tokens: int = 20_000_000
    overage_price_per_1k_tokens: Decimal = Decimal("0.003")
    overage_allowed: bool = True
    name: str = "Standard"


def test_it_bills_what_the_invoice_bills():
    plan = Plan()
    for tokens in (0, 19_999_999, 20_000_000, 20_000_001, 20_166_667, 53_000_000):
        bill = spend.bill(plan, tokens)
        assert (bill.fee, bill.overage, bill.total) == invoice_amounts(plan, tokens)
    assert spend.bill(plan, 21_000_000).as_dict() == {
        "tokens": 21_000_000,
        "fee": Decimal("499.00"),
        "overage": Decimal("3.00"),
        "total": Decimal("502.00"),
    }


def test_it_turns_a_budget_into_included_tokens_plus_the_overage_it_pays_for():
    plan = Plan()
    # $101 over the fee at $0.003 per 1k: ⌊101 × 1000 / 0.003⌋ = 33,666,666 tokens of overage.
    assert spend.budget_token_ceiling(plan, Decimal("600.00")) == 20_000_000 + 33_666_666
    assert spend.budget_token_ceiling(plan, Decimal("499.00")) == 20_000_000  # the fee: no overage


@pytest.mark.parametrize(
    ("fee", "included", "price", "budget"),
    [
        ("499.00", 20_000_000, "0.003", "600.00"),
        ("49.00", 1_000_000, "0.004", "49.01"),
        ("100.00", 0, "1.00", "102.07"),
        ("4900.00", 250_000_000, "0.002", "5500.00"),
        ("0.00", 0, "0.0007", "0.05"),
    ],
)
def test_the_ceilings_bill_is_within_the_budget_and_one_more_1k_tokens_is_not(fee, included, price, budget):
    plan = Plan(Decimal(fee), included, Decimal(price))
    ceiling = spend.budget_token_ceiling(plan, Decimal(budget))
    assert spend.bill(plan, ceiling).total <= Decimal(budget)
    # The floor leaves less than one token's price of room, so 1,000 tokens more (at least a
    # tenth of a cent at these prices) always bill past it.
    assert spend.bill(plan, ceiling + 1000 + int(Decimal("0.01") * 1000 / Decimal(price))).total > Decimal(budget)


def test_without_overage_a_budget_adds_no_ceiling_to_the_quota():
    plan = Plan(overage_allowed=False)
    assert spend.budget_token_ceiling(plan, Decimal("600.00")) is None
    assert spend.budget_rule(plan, Decimal("600.00")) == spend.BudgetRule.NO_OVERAGE


def test_with_free_overage_a_budget_is_never_reached():
    plan = Plan(overage_price_per_1k_tokens=Decimal("0"))
    assert spend.budget_token_ceiling(plan, Decimal("600.00")) is None
    assert spend.budget_rule(plan, Decimal("600.00")) == spend.BudgetRule.FREE_OVERAGE


def test_a_budget_below_the_fee_allows_no_tokens_and_cannot_be_set():
    plan = Plan()
    assert spend.budget_token_ceiling(plan, Decimal("250.00")) == 0
    assert spend.budget_rule(plan, Decimal("250.00")) == spend.BudgetRule.BELOW_FEE
    problem = spend.check_budget(plan, Decimal("250.00"))
    assert "$499.00" in problem
    assert spend.check_budget(plan, Decimal("499.00")) is None
    assert spend.check_budget(plan, None) is None


def test_no_budget_is_no_ceiling():
    assert spend.budget_token_ceiling(Plan(), None) is None
    assert spend.budget_rule(Plan(), None) == spend.BudgetRule.NONE


def test_a_tenant_without_a_plan_is_billed_nothing():
    assert spend.bill(None, 5000).total == Decimal("0.00")
    assert spend.monthly_fee(None) == Decimal("0.00")


def test_it_puts_the_soft_alert_on_the_variable_part_of_the_bill_not_on_the_fee():
    plan = Plan(monthly_price=Decimal("100.00"), included_tokens=1000, overage_price_per_1k_tokens=Decimal("10"))
    # The fee plus 80 % of what the budget leaves above it.
    assert spend.alert_threshold(Decimal("110.00"), 80, Decimal("100.00")) == Decimal("108.00")
    assert spend.alert_threshold(Decimal("500.00"), 50, Decimal("100.00")) == Decimal("300.00")
    assert not spend.alert_due(spend.bill(plan, 1000), Decimal("110.00"), 80)  # the fee alone: $100.00
    assert not spend.alert_due(spend.bill(plan, 1700), Decimal("110.00"), 80)  # $107.00
    assert spend.alert_due(spend.bill(plan, 1800), Decimal("110.00"), 80)  # $108.00
    assert not spend.alert_due(spend.bill(plan, 5000), None, 80)


def test_a_budget_at_the_fee_alerts_on_the_first_overage_not_on_the_fee():
    plan = Plan(monthly_price=Decimal("100.00"), included_tokens=1000, overage_price_per_1k_tokens=Decimal("10"))
    assert not spend.alert_due(spend.bill(plan, 999), Decimal("100.00"), 80)
    assert spend.alert_due(spend.bill(plan, 1100), Decimal("100.00"), 80)

"""An operator's change of plan and a tenant admin's budget edit, at once, never both commit a
budget below the plan's fee (billing.spend: a budget is at least the plan's full monthly fee).

Each side judges under the same locks, taken in one order: the Tier row (a tier's price edit, a
move to it), then the Tenant row, then its TenantBudget row (tenants.services.update_tenant and
save_tier, billing.limits.set_budget). So whichever commits second waited for the first and judges
what it committed: an admin lowering the cap against the old cheap plan while the operator moves
the tenant to a dearer one (judged against the old high cap) no longer leaves the cap below the fee.

PostgreSQL only: two connections, one transaction held open while the other runs. SQLite takes its
one write lock at BEGIN (IMMEDIATE: portal/settings.py), so the two queue there and cannot interleave.
"""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connection, transaction

from billing import limits
from billing.models import TenantBudget
from tenants import services as tenant_services
from tenants.context import tenant_context
from tenants.models import Tenant, Tier
from tests.billing.helpers import actor
from tests.factories import make_tier

pytestmark = [
    pytest.mark.skipif(not settings.DATABASE_IS_POSTGRES, reason="watches PostgreSQL's lock waits"),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def capped(world):
    """Alpha on a $100 plan with a $600 monthly budget; Pro at $499 to move to."""
    basic = make_tier("basic-100", monthly_price=Decimal("100.00"))
    Tenant.objects.filter(pk=world.a.tenant.pk).update(tier=basic)
    world.a.tenant.refresh_from_db()
    with tenant_context(world.a.tenant):
        limits.set_budget(actor(world.a, "owner"), monthly_budget=Decimal("600.00"), soft_alert_percent=80)
    world.basic = basic
    world.pro = make_tier("pro-499", name="Pro", monthly_price=Decimal("499.00"))
    return world


def lower_the_cap(world, amount: str = "150.00"):
    """The tenant admin's budget form: the tenant as the request found it, then set_budget."""
    tenant = Tenant.objects.select_related("tier").get(pk=world.a.tenant.pk)
    with tenant_context(tenant):
        return limits.set_budget(actor(world.a, "owner"), monthly_budget=Decimal(amount), soft_alert_percent=80)


def move_to_pro(world, operator):
    tenant = Tenant.objects.select_related("tier").get(pk=world.a.tenant.pk)
    return tenant_services.update_tenant(operator, tenant, tier=Tier.objects.get(pk=world.pro.pk))


def reprice_basic(world, operator, price: str = "499.00"):
    tier = Tier.objects.get(pk=world.basic.pk)
    tier.monthly_price = Decimal(price)
    return tenant_services.save_tier(operator, tier)


def state(world) -> tuple[str, Decimal, Decimal]:
    tenant = Tenant.objects.select_related("tier").get(pk=world.a.tenant.pk)
    with tenant_context(tenant):
        cap = TenantBudget.objects.get().monthly_budget
    return tenant.tier.slug, tenant.tier.monthly_price, cap


def second_while_first_is_open(first, second) -> dict[str, object]:
    """`first` runs in a transaction held open until `second` (on another connection) waits for
    a lock or has finished; then `first` commits. Each one's outcome: "ok" or its error, and
    whether the second was still waiting when the first committed."""
    opened, release = threading.Event(), threading.Event()
    outcomes: dict[str, object] = {}

    def run(name, function, hold=False):
        try:
            with transaction.atomic():
                function()
                if hold:
                    opened.set()
                    release.wait(30)
            outcomes[name] = "ok"
        except tenant_services.ServiceError as exc:
            outcomes[name] = exc
        finally:
            opened.set()
            connection.close()

    one = threading.Thread(target=run, args=("first", first, True))
    one.start()
    opened.wait(30)
    two = threading.Thread(target=run, args=("second", second))
    two.start()
    while two.is_alive() and not _someone_waits_for_a_lock():
        two.join(0.05)
    outcomes["second waited"] = two.is_alive()
    release.set()
    one.join(30)
    two.join(30)
    assert not one.is_alive() and not two.is_alive(), "a thread is stuck"
    return outcomes


def _someone_waits_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0


def test_a_budget_edit_during_a_move_to_a_dearer_plan_waits_and_is_judged_on_the_new_fee(capped, operator):
    outcomes = second_while_first_is_open(lambda: move_to_pro(capped, operator), lambda: lower_the_cap(capped))

    assert outcomes["first"] == "ok"
    assert outcomes["second waited"]
    assert "$499.00" in str(outcomes["second"])
    assert state(capped) == ("pro-499", Decimal("499.00"), Decimal("600.00"))


def test_a_move_during_a_budget_edit_waits_and_is_judged_on_the_new_cap(capped, operator):
    outcomes = second_while_first_is_open(lambda: lower_the_cap(capped), lambda: move_to_pro(capped, operator))

    assert outcomes["first"] == "ok"
    assert outcomes["second waited"]
    assert isinstance(outcomes["second"], tenant_services.BudgetBelowPlan)
    assert state(capped) == ("basic-100", Decimal("100.00"), Decimal("150.00"))


def test_a_budget_edit_during_a_price_rise_waits_and_is_judged_on_the_new_price(capped, operator):
    outcomes = second_while_first_is_open(lambda: reprice_basic(capped, operator), lambda: lower_the_cap(capped))

    assert outcomes["first"] == "ok"
    assert outcomes["second waited"]
    assert "$499.00" in str(outcomes["second"])
    assert state(capped) == ("basic-100", Decimal("499.00"), Decimal("600.00"))


def test_a_price_rise_during_a_budget_edit_waits_and_is_judged_on_the_new_cap(capped, operator):
    outcomes = second_while_first_is_open(lambda: lower_the_cap(capped), lambda: reprice_basic(capped, operator))

    assert outcomes["first"] == "ok"
    assert outcomes["second waited"]
    assert isinstance(outcomes["second"], tenant_services.BudgetsBelowTierFee)
    assert state(capped) == ("basic-100", Decimal("100.00"), Decimal("150.00"))

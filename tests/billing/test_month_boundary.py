"""A turn admitted in the last second of a month and finished in the first of the next:
its reservation is given back to the month it was taken from, and its real usage counted
in the month it finished in, once (billing.metering settles by the Reservation's month)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from agents import services
from billing import accounting
from billing.models import MonthlyUsage, Reservation
from tenants.context import tenant_context
from tests.billing.helpers import actor, ask, run
from tests.billing.test_limits import estimate, set_tier
from tests.billing.test_tpm_settlement import uses

pytestmark = pytest.mark.django_db


@pytest.fixture
def boundary(monkeypatch):
    """The next month's first instant; `at(seconds)` moves the clock to that many seconds from it."""
    first = dt.datetime.combine(accounting.next_month(accounting.month_start(timezone.now())), dt.time(), tzinfo=dt.UTC)

    def at(seconds: int) -> None:
        instant = first + dt.timedelta(seconds=seconds)
        monkeypatch.setattr(timezone, "now", lambda: instant)

    at.first = first
    return at


def counters(side) -> dict:
    with tenant_context(side.tenant):
        rows = MonthlyUsage.objects.order_by("month", "user_key")
        return {(row.month, row.user_key): (row.tokens_used, row.tokens_reserved) for row in rows}


def test_a_turn_finished_in_the_next_month_gives_its_reservation_back_to_the_month_it_took_it_from(
    world, catalogue, runtime, boundary
):
    set_tier(world.a, concurrent_sessions=1)
    uses(runtime, 40, 10)
    boundary(-1)
    invocation = ask(world.a, catalogue.helpdesk)
    boundary(1)
    assert run(world.a, invocation) == "done"
    before, after = accounting.month_start(boundary.first - dt.timedelta(days=1)), boundary.first.date()
    user = world.a.member.pk
    assert counters(world.a) == {
        (before, 0): (0, 0),
        (before, user): (0, 0),
        (after, 0): (50, 0),
        (after, user): (50, 0),
    }
    with tenant_context(world.a.tenant):
        assert Reservation.objects.get().status == "settled"
    # Its concurrent session is free again in the new month.
    assert ask(world.a, catalogue.helpdesk).status == "queued"


def test_a_turn_cancelled_in_the_next_month_releases_the_month_it_reserved(world, catalogue, runtime, boundary):
    set_tier(world.a, concurrent_sessions=1)
    boundary(-1)
    invocation = ask(world.a, catalogue.helpdesk)
    tokens, _ = estimate(catalogue)
    before = accounting.month_start(boundary.first - dt.timedelta(days=1))
    assert counters(world.a)[(before, 0)] == (0, tokens)
    boundary(1)
    with tenant_context(world.a.tenant):
        services.cancel_turn(actor(world.a), invocation)
    assert all(reserved == 0 for _, reserved in counters(world.a).values())
    assert all(used == 0 for used, _ in counters(world.a).values())
    assert ask(world.a, catalogue.helpdesk).status == "queued"

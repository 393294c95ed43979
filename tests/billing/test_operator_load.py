"""The operator's Load page: tenants ranked by their use of the shared capacity, per window."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from agents.concurrency import peak_concurrent_turns
from agents.models import Invocation
from billing import load
from billing.accounting import latency_percentile
from tenants.context import all_tenants, tenant_context
from tenants.models import AuditLog, DeploymentModel
from tests import factories
from tests.agents.helpers import make_turn
from tests.billing.usage_helpers import record_throttle, record_usage

pytestmark = pytest.mark.django_db


def turn_between(tenant, user, agent, start: dt.datetime, end: dt.datetime | None):
    _, _, invocation = make_turn(tenant, user, agent)
    with tenant_context(tenant):
        Invocation.objects.filter(pk=invocation.pk).update(queued_at=start, finished_at=end)
    return invocation


@pytest.fixture
def busy(world, catalogue):
    """In the last hour Alpha (pool) used 9,000 tokens in three overlapping turns, hitting its
    tier's 2 concurrent sessions and refused twice; Bravo (bridge) 1,000 tokens; Vault (silo)
    more than both, on its own capacity. Older usage lies outside the hour."""
    now = timezone.now()  # per test: a module-level time goes stale in a long run
    world.a.tenant.tier.concurrent_sessions = 2
    world.a.tenant.tier.save()
    world.b.tenant.deployment_model = DeploymentModel.BRIDGE
    world.b.tenant.save()
    world.vault = factories.make_tenant("vault", deployment_model=DeploymentModel.SILO)
    minutes = [now - dt.timedelta(minutes=m) for m in (40, 30, 20)]
    for when, latency in zip(minutes, (400, 900, 6000), strict=True):
        record_usage(world.a.tenant, when, input_tokens=2000, output_tokens=1000, latency_ms=latency)
    record_throttle(world.a.tenant, minutes[0])
    record_throttle(world.a.tenant, minutes[1])
    record_usage(world.b.tenant, minutes[1], input_tokens=800, output_tokens=200, latency_ms=300)
    record_usage(world.vault, minutes[2], input_tokens=20000, output_tokens=0)
    # Three hours ago (today or yesterday, UTC): Bravo's big day. Three days ago: more of Bravo.
    record_usage(world.b.tenant, now - dt.timedelta(hours=3), input_tokens=50000, output_tokens=0)
    record_usage(world.b.tenant, now - dt.timedelta(days=3), input_tokens=500000, output_tokens=0)
    record_throttle(world.b.tenant, now - dt.timedelta(days=3))
    helpdesk = catalogue.helpdesk
    turn_between(world.a.tenant, world.a.member, helpdesk, minutes[0], minutes[0] + dt.timedelta(minutes=15))
    turn_between(world.a.tenant, world.a.member, helpdesk, minutes[1], minutes[1] + dt.timedelta(minutes=15))
    turn_between(world.a.tenant, world.a.member, helpdesk, minutes[2], minutes[2] + dt.timedelta(minutes=1))
    turn_between(world.b.tenant, world.b.member, helpdesk, minutes[1], minutes[1] + dt.timedelta(seconds=5))
    return world


def test_it_ranks_the_shared_tenants_by_tokens_and_sets_silo_tenants_apart(client, busy, operator):
    client.force_login(operator)
    response = client.get("/operator/load/")
    assert response.status_code == 200
    page = response.context["load"]
    assert [r.tenant.slug for r in page.shared] == ["alpha", "bravo"]
    assert [r.tenant.slug for r in page.dedicated] == ["vault"]
    alpha, bravo = page.shared
    assert (alpha.turns, alpha.input_tokens, alpha.output_tokens, alpha.throttled) == (3, 6000, 3000, 2)
    assert (bravo.turns, bravo.tokens, bravo.throttled) == (1, 1000, 0)
    assert page.tokens == 30000
    assert (str(alpha.share), str(bravo.share), str(page.dedicated[0].share)) == ("30.0", "3.3", "66.7")
    assert (alpha.peak_concurrent, alpha.at_concurrency_limit) == (2, True)
    assert (bravo.peak_concurrent, bravo.at_concurrency_limit) == (1, False)
    # The hour's raw latencies fall into the roll-up's histogram buckets (0.4 s, 0.9 s, 6 s).
    assert alpha.p95_ms == latency_percentile({"lat_le_500": 1, "lat_le_1000": 1, "lat_le_10000": 1}, 95) > 5000
    assert bravo.p95_ms == latency_percentile({"lat_le_500": 1}, 95)
    html = response.content.decode()
    assert 'href="/operator/tenants/alpha/"' in html and 'href="/operator/billing/tenants/alpha/"' in html
    assert "2 / 2" in html  # peak next to the tier's limit, flagged


def test_the_window_switches_between_the_hour_two_days_and_seven_days(client, busy, operator):
    client.force_login(operator)

    def ranking(window):
        response = client.get("/operator/load/", {"window": window})
        assert response.status_code == 200
        assert response.context["window"].key == window
        return {r.tenant.slug: (r.tokens, r.throttled) for r in response.context["load"].shared}

    assert ranking("hour") == {"alpha": (9000, 2), "bravo": (1000, 0)}
    assert ranking("2d") == {"bravo": (51000, 0), "alpha": (9000, 2)}
    assert list(ranking("7d").items()) == [("bravo", (551000, 1)), ("alpha", (9000, 2))]


def test_it_answers_400_naming_the_windows_to_an_unknown_one(client, busy, operator):
    client.force_login(operator)
    response = client.get("/operator/load/", {"window": "fortnight\x00"})
    assert response.status_code == 400
    assert "Last hour, Today and yesterday, Last 7 days" in response.content.decode()
    assert response.context["window"].key == "hour"


def test_it_is_for_operators_only(client, busy):
    client.force_login(busy.a.owner)
    assert client.get("/operator/load/").status_code == 404
    client.logout()
    response = client.get("/operator/load/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_the_operators_read_is_audited_and_the_console_links_to_it(client, busy, operator):
    client.force_login(operator)
    response = client.get("/operator/")
    assert 'href="/operator/load/"' in response.content.decode()
    client.get("/operator/load/")
    with all_tenants("test"):
        assert AuditLog.unscoped.filter(after__page="load", actor=operator).count() == 1


def test_peak_concurrency_counts_turns_in_progress_together(world, catalogue):
    now = timezone.now()
    start = now - dt.timedelta(hours=1)
    helpdesk, tenant, user = catalogue.helpdesk, world.a.tenant, world.a.member
    # Back to back (one ends as the next starts) is not concurrent; one still running from
    # before the window overlaps both; one long over before the window does not count.
    turn_between(tenant, user, helpdesk, start + dt.timedelta(minutes=10), start + dt.timedelta(minutes=20))
    turn_between(tenant, user, helpdesk, start + dt.timedelta(minutes=20), start + dt.timedelta(minutes=30))
    turn_between(tenant, user, helpdesk, start - dt.timedelta(minutes=5), None)
    turn_between(tenant, user, helpdesk, start - dt.timedelta(hours=3), start - dt.timedelta(hours=2))
    turn_between(tenant, user, helpdesk, start - dt.timedelta(hours=3), start - dt.timedelta(hours=2))
    with all_tenants("test"):
        assert peak_concurrent_turns(start, now) == {tenant.pk: 2}
        assert peak_concurrent_turns(start - dt.timedelta(hours=4), start - dt.timedelta(hours=1)) == {tenant.pk: 2}


def test_day_windows_read_whole_utc_days_of_the_rollups():
    now = dt.datetime(2026, 12, 4, 1, 30, tzinfo=dt.UTC)
    two_days = load.load_window("2d", now)
    assert (two_days.first_day, two_days.last_day, two_days.from_rollups) == (
        dt.date(2026, 12, 3),
        dt.date(2026, 12, 4),
        True,
    )
    assert load.load_window("7d", now).first_day == dt.date(2026, 11, 28)
    assert load.load_window("hour", now).start == now - dt.timedelta(hours=1)

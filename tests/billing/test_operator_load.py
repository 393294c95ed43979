"""The operator's Load page: tenants ranked by their use of the shared capacity, per window."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from agents.concurrency import peak_concurrent_turns
from agents.models import Invocation
from billing import load
from billing.accounting import latency_percentile
from portal.operator.services import READ_ACTION
from tenants.context import all_tenants, tenant_context
from tenants.models import AuditLog, DeploymentModel, Membership, Role
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


# --- Queues and workers (agents/queues.py): what waits in each queue, and who reads it ---------


class Inspect:
    def __init__(self, answers):
        self.answers = answers

    def active_queues(self):
        return self.answers


@pytest.fixture
def queued(world, catalogue):
    """Alpha (pool) has a turn queued 2 minutes ago on its tier's queue and one running; Vault
    (silo) has a queue of its own with a turn waiting; an old turn still sits in a queue
    nothing is sent to any more (a tenant moved off it)."""
    now = timezone.now()
    world.vault = factories.make_tenant("vault", deployment_model=DeploymentModel.SILO)
    helpdesk = catalogue.helpdesk
    waiting = turn_between(world.a.tenant, world.a.member, helpdesk, now - dt.timedelta(minutes=2), None)
    running = turn_between(world.a.tenant, world.a.member, helpdesk, now - dt.timedelta(seconds=5), None)
    vault_member = factories.make_user("vault-member@example.com")
    with tenant_context(world.vault):
        Membership.objects.create(user=vault_member, role=Role.MEMBER)
    silo = turn_between(world.vault, vault_member, helpdesk, now - dt.timedelta(seconds=3), None)
    stranded = turn_between(world.b.tenant, world.b.member, helpdesk, now - dt.timedelta(seconds=1), None)
    alpha_queue = world.a.tenant.bindings.celery_queue
    for tenant, invocation, status, queue in (
        (world.a.tenant, waiting, "queued", alpha_queue),
        (world.a.tenant, running, "streaming", alpha_queue),
        (world.vault, silo, "queued", world.vault.bindings.celery_queue),
        (world.b.tenant, stranded, "queued", "tier-retired"),
    ):
        with tenant_context(tenant):
            Invocation.objects.filter(pk=invocation.pk).update(status=status, queue=queue)
    return world


def test_it_shows_every_queue_with_its_backlog_and_the_workers_that_read_it(client, queued, operator, monkeypatch):
    from portal.celery import app

    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:6379/0")
    alpha_queue, vault_queue = queued.a.tenant.bindings.celery_queue, queued.vault.bindings.celery_queue
    answers = {"w1@web-1": [{"name": alpha_queue}], "w2@web-2": [{"name": alpha_queue}, {"name": "tier-retired"}]}
    monkeypatch.setattr(app.control, "inspect", lambda timeout: Inspect(answers))
    client.force_login(operator)
    response = client.get("/operator/load/queues/")
    assert response.status_code == 200
    rows = {q.name: q for q in response.context["queues"]}
    alpha = rows[alpha_queue]
    assert (alpha.queued, alpha.running, alpha.workers, alpha.state) == (1, 1, ["w1@web-1", "w2@web-2"], "stuck")
    assert alpha.waited >= dt.timedelta(minutes=2) and queued.a.tenant.tier.name in alpha.tiers
    vault = rows[vault_queue]
    assert (vault.tenants, vault.queued, vault.workers, vault.state) == (["Vault"], 1, [], "unserved")
    retired = rows["tier-retired"]
    assert (retired.routed, retired.queued, retired.state) == (False, 1, "ok")
    assert list(rows)[-1] == "tier-retired"  # queues nothing is sent to come last
    html = response.content.decode()
    assert "No worker" in html and "Backlog" in html and "Nothing is sent here now" in html
    # w2 reads the retired queue too, but nothing is sent there: no worker shares routed queues.
    assert response.context["shared_workers"] == {}
    with all_tenants("test: the operator's read is audited"):
        assert AuditLog.unscoped.filter(action=READ_ACTION, actor=operator).exists()


def test_it_warns_when_one_worker_reads_several_tier_queues(client, queued, operator, monkeypatch):
    from portal.celery import app

    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:6379/0")
    routed = [queued.a.tenant.bindings.celery_queue, queued.vault.bindings.celery_queue]
    answers = {"celery@one": [{"name": name} for name in [*routed, "tier-retired"]]}
    monkeypatch.setattr(app.control, "inspect", lambda timeout: Inspect(answers))
    client.force_login(operator)
    response = client.get("/operator/load/queues/")
    assert response.context["shared_workers"] == {"celery@one": sorted(routed)}
    assert "a backlog on one delays the others" in response.content.decode()


def test_it_says_when_the_workers_cannot_be_asked(client, queued, operator, monkeypatch):
    from portal.celery import app

    monkeypatch.setattr(app.conf, "broker_url", "filesystem://")
    client.force_login(operator)
    response = client.get("/operator/load/queues/")
    assert response.status_code == 200
    assert all(q.workers is None for q in response.context["queues"])
    assert "the filesystem broker has no remote control" in response.content.decode()


def test_the_load_page_fetches_the_queues_panel_after_it_renders(client, world, operator, monkeypatch):
    from agents import queues

    monkeypatch.setattr(queues, "queue_consumers", lambda: pytest.fail("the page itself must not ask the workers"))
    client.force_login(operator)
    html = client.get("/operator/load/").content.decode()
    assert 'hx-get="/operator/load/queues/"' in html and 'hx-trigger="load"' in html


def test_members_and_tenant_admins_do_not_see_the_queues(client, world):
    client.force_login(world.a.owner)
    assert client.get("/operator/load/queues/").status_code == 404

"""One way to show a moment on every page: "3 Dec 2026, 14:05 UTC", in a <time> element whose
datetime is the ISO 8601 instant and whose title is the full timestamp (portal_format)."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.template import Context, Template
from django.utils import timezone

from billing import invoices as inv
from billing.accounting import month_start
from billing.models import LimitKind
from portal.templatetags.portal_format import when
from tenants.context import tenant_context
from tenants.models import AuditLog, Invitation
from tests import factories
from tests.billing.usage_helpers import record_throttle, record_usage

MOMENT = dt.datetime(2026, 3, 14, 9, 5, 7, tzinfo=dt.UTC)
SHOWN = '<time datetime="2026-03-14T09:05:07Z" title="14 Mar 2026, 09:05:07 UTC">14 Mar 2026, 09:05 UTC</time>'


def render(source: str, **context) -> str:
    return Template("{% load portal_format %}" + source).render(Context(context))


def test_it_shows_a_moment_as_day_month_year_time_and_utc_in_a_time_element():
    assert render("{{ moment|when }}", moment=MOMENT) == SHOWN


def test_it_shows_a_moment_of_another_zone_in_utc():
    paris = dt.timezone(dt.timedelta(hours=1))
    assert render("{{ moment|when }}", moment=MOMENT.astimezone(paris)) == SHOWN


def test_it_shows_the_day_only_with_the_full_timestamp_on_hover():
    assert render('{{ moment|when:"date" }}', moment=MOMENT) == (
        '<time datetime="2026-03-14T09:05:07Z" title="14 Mar 2026, 09:05:07 UTC">14 Mar 2026</time>'
    )


def test_it_stacks_the_time_under_the_day_for_a_dense_table():
    assert render('{{ moment|when:"stacked" }}', moment=MOMENT) == (
        '<time datetime="2026-03-14T09:05:07Z" title="14 Mar 2026, 09:05:07 UTC">'
        '14 Mar 2026,<br><span class="muted">09:05 UTC</span></time>'
    )


def test_it_shows_a_date_as_a_day():
    assert render("{{ day|when }}", day=dt.date(2027, 1, 1)) == '<time datetime="2027-01-01">1 Jan 2027</time>'


def test_it_writes_the_same_words_without_markup_for_mail_and_attributes():
    assert render("{{ moment|when_text }}", moment=MOMENT) == "14 Mar 2026, 09:05 UTC"


@pytest.mark.parametrize("empty", [None, ""])
def test_it_shows_a_dash_for_no_moment(empty):
    assert render("{{ moment|when }}|{{ moment|when_text }}", moment=empty) == "—|—"


# --- the admin and billing pages use it ------------------------------------------------------


def times(body: str) -> list[str]:
    return re.findall(r"<time [^>]*>[^<]*</time>", body)


@pytest.mark.django_db
def test_the_audit_log_shows_its_entries_times_in_the_convention(client, world):
    with tenant_context(world.a.tenant):
        AuditLog(tenant=world.a.tenant, actor_email="owner@alpha.test", action="x.y", created_at=MOMENT).save(
            force_insert=True
        )
    client.force_login(world.a.owner)
    assert when(MOMENT, "stacked") in client.get("/t/alpha/audit/").content.decode()


@pytest.mark.django_db
def test_the_members_page_shows_joined_days_and_expiry_moments_in_the_convention(client, world):
    invitation = factories.make_invitation(world.a.tenant, "new@alpha.test", invited_by=world.a.owner)
    with tenant_context(world.a.tenant):
        joined = world.a.memberships["admin"].created_at
    client.force_login(world.a.owner)

    shown = times(client.get("/t/alpha/members/").content.decode())

    assert when(joined, "date") in shown
    assert when(invitation.expires_at) in shown


@pytest.mark.django_db
def test_the_billing_pages_show_moments_in_the_convention(client, world):
    now = timezone.now().replace(microsecond=0)
    event = record_usage(world.a.tenant, now, user=world.a.member)
    record_throttle(world.a.tenant, now, user=world.a.member, kind=LimitKind.RPM)
    with tenant_context(world.a.tenant):
        invoice = inv.draft_invoice(world.a.tenant, month_start(now.date()))
    client.force_login(world.a.owner)

    assert when(event.created_at, "stacked") in client.get("/t/alpha/billing/events/").content.decode()
    assert when(now) in times(client.get("/t/alpha/billing/limits/").content.decode())
    detail = client.get(f"/t/alpha/billing/invoices/{invoice.pk}/").content.decode()
    assert when(invoice.drafted_at) in times(detail)


@pytest.mark.django_db
def test_the_invitation_mail_and_page_say_when_it_expires_in_the_convention(
    client, world, settings, mailoutbox, django_capture_on_commit_callbacks
):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    client.force_login(world.a.owner)
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/t/alpha/members/invite/", {"email": "new@alpha.test", "role": "member"})
    with tenant_context(world.a.tenant):
        invitation = Invitation.objects.get(email="new@alpha.test")

    [message] = mailoutbox
    assert f"expires on {render('{{ m|when_text }}', m=invitation.expires_at)}." in message.body
    client.logout()
    page = client.get(f"/invitations/{invitation.token}/").content.decode()
    assert when(invitation.expires_at) in times(page)


# --- the guardrail, knowledge, operator and session pages use it too ---------------------------


@pytest.mark.django_db
def test_the_guardrail_events_and_chart_show_moments_and_days_in_the_convention(client, world):
    from agents.guardrails.models import GuardrailEvent

    with tenant_context(world.a.tenant):
        event = GuardrailEvent.objects.create(stage="input", category="pii", rule="email", action="redact")
    client.force_login(world.a.owner)

    body = client.get("/t/alpha/guardrails/").content.decode()

    assert when(event.created_at, "stacked") in body
    today = event.created_at.astimezone(dt.UTC).date()
    assert f'title="{render("{{ d|when_text }}", d=today)}: 0 blocked"' in body  # the chart's bar of today
    assert when(today) in times(body)  # the chart's last tick


@pytest.mark.django_db
def test_the_knowledge_bases_show_when_they_changed_in_the_convention(client, world):
    from tests.knowledge.helpers import entitle, make_kb

    entitle(world.a.tenant)
    kb = make_kb(world.a)
    client.force_login(world.a.admin)

    assert when(kb.updated_at, "date") in times(client.get("/t/alpha/knowledge/").content.decode())


@pytest.mark.django_db
def test_the_operators_agent_identities_show_days_and_moments_in_the_convention(client, operator):
    from tenants.identity import services as identity_services

    agent, _ = identity_services.create_shared_agent_identity(operator, name="Helpdesk", allowed_scopes=[])
    identity_services.rotate_agent_secret(operator, agent)
    identity_services.set_agent_identity_enabled(operator, agent, enabled=False)
    agent.refresh_from_db()
    client.force_login(operator)

    body = client.get("/operator/agent-identities/").content.decode()

    assert f"since {when(agent.created_at, 'date')}" in body
    assert f"secret rotated {when(agent.rotated_at, 'date')}" in body
    assert f'title="Disabled {render("{{ m|when_text }}", m=agent.disabled_at)}"' in body


@pytest.mark.django_db
def test_the_operators_invoice_says_when_it_was_finalised_in_the_convention(client, world, operator):
    last_month = month_start(month_start() - dt.timedelta(days=1))
    with tenant_context(world.a.tenant):
        invoice = inv.draft_invoice(world.a.tenant, last_month)
    invoice = inv.finalise_invoice(operator, invoice)
    client.force_login(operator)

    body = client.get(f"/operator/billing/invoices/{invoice.pk}/").content.decode()

    assert f"Final since {when(invoice.finalized_at)}" in body


@pytest.mark.django_db
def test_the_sessions_page_says_when_each_session_began_in_the_convention(client, world):
    from allauth.usersessions.models import UserSession

    from tests.identity.mfa_helpers import sign_in_with_password

    assert sign_in_with_password(client, world.a.member).status_code == 302
    client.get("/accounts/2fa/")  # a page opened: the session is recorded, with its activity
    [session] = UserSession.objects.filter(user=world.a.member)

    shown = times(client.get("/accounts/sessions/").content.decode())

    assert when(session.created_at) in shown
    assert when(session.last_seen_at) in shown


# --- relative times: only in the conversation lists, and always with the exact moment ---------


def template_sources() -> dict[str, str]:
    """Every template of the project and its apps, by its name (e.g. "agents/chat_home.html")."""
    from pathlib import Path

    from django.conf import settings

    roots = [Path(d) for engine in settings.TEMPLATES for d in engine.get("DIRS", [])]
    roots += [
        Path(__file__).resolve().parents[2] / app / "templates" for app in ("agents", "billing", "portal", "tenants")
    ]
    sources = {}
    for root in roots:
        for path in root.rglob("*.html") if root.is_dir() else []:
            sources[path.relative_to(root).as_posix()] = path.read_text()
    return sources


def test_the_templates_are_found():
    assert {"agents/chat_home.html", "identity/api_clients.html", "operator/tenant_detail.html"} <= set(
        template_sources()
    )


def test_no_template_uses_djangos_naturaltime_it_gives_neither_time_element_nor_the_exact_moment():
    stray = [name for name, source in template_sources().items() if "naturaltime" in source]
    assert stray == [], f"naturaltime in {stray}: use |when (or |ago in a conversation list)"


def test_only_the_conversation_lists_show_relative_times():
    from portal.templatetags.portal_format import RELATIVE_TIME_TEMPLATES

    relative = {name for name, source in template_sources().items() if re.search(r"\|\s*ago\b", source)}
    assert relative == set(RELATIVE_TIME_TEMPLATES), "relative times (|ago) outside the conversation lists"


def test_a_relative_time_says_how_long_ago_with_the_exact_moment_as_title():
    five_minutes_ago = timezone.now().replace(microsecond=0) - dt.timedelta(minutes=5)
    shown = render("{{ moment|ago }}", moment=five_minutes_ago)
    exact = render("{{ m|when_text }}", m=five_minutes_ago)
    assert re.fullmatch(r'<time datetime="[^"]+Z" title="[^"]+">5\xa0minutes ago</time>', shown), shown
    assert f'title="{exact[:-4]}:' in shown  # to the second


@pytest.mark.django_db
def test_the_conversation_lists_show_relative_times_with_the_exact_moment(client, world):
    from tests.agents.helpers import make_catalogue, make_turn

    catalogue = make_catalogue(world.a.tenant, world.b.tenant)
    conversation, _, _ = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk)
    # Two hours ago reads the same when the test renders it and when the pages do, however slow.
    two_hours_ago = timezone.now().replace(microsecond=0) - dt.timedelta(hours=2, minutes=1)
    with tenant_context(world.a.tenant):
        type(conversation).objects.filter(pk=conversation.pk).update(updated_at=two_hours_ago)
    client.force_login(world.a.member)
    updated = render("{{ m|ago }}", m=two_hours_ago)
    assert "2\xa0hours ago" in updated

    assert updated in client.get("/t/alpha/chat/").content.decode()
    assert updated in client.get(f"/t/alpha/chat/{conversation.pk}/").content.decode()


@pytest.mark.django_db
def test_the_api_client_pages_say_when_a_client_was_created_and_last_used_in_the_convention(client, world):
    from tenants.identity import services as identity_services
    from tenants.identity.models import ApiClient
    from tenants.services import Actor

    actor = Actor(user=world.a.owner, membership=world.a.memberships["owner"])
    with tenant_context(world.a.tenant):
        api_client, _ = identity_services.create_api_client(actor, name="Nightly export", scopes=["tenant:read"])
        ApiClient.objects.filter(pk=api_client.pk).update(last_used_at=MOMENT)
        api_client.refresh_from_db()
    client.force_login(world.a.owner)

    listed = times(client.get("/t/alpha/api-clients/").content.decode())
    detail = times(client.get(f"/t/alpha/api-clients/{api_client.pk}/").content.decode())

    assert when(MOMENT) in listed and when(api_client.created_at, "date") in listed
    assert when(MOMENT) in detail and when(api_client.created_at) in detail


@pytest.mark.django_db
def test_the_operators_tenant_page_says_when_invitations_expire_and_clients_were_used_in_the_convention(
    client, world, operator
):
    from tenants.identity import services as identity_services
    from tenants.identity.models import ApiClient
    from tenants.services import Actor

    invitation = factories.make_invitation(world.a.tenant, "new@alpha.test", invited_by=world.a.owner)
    actor = Actor(user=world.a.owner, membership=world.a.memberships["owner"])
    with tenant_context(world.a.tenant):
        api_client, _ = identity_services.create_api_client(actor, name="Nightly export", scopes=["tenant:read"])
        ApiClient.objects.filter(pk=api_client.pk).update(last_used_at=MOMENT)
    client.force_login(operator)

    shown = times(client.get("/operator/tenants/alpha/").content.decode())

    assert when(invitation.expires_at) in shown
    assert when(MOMENT) in shown


# --- Django's |date and |time: never for a moment or a day -----------------------------------

DATE_FILTER = re.compile(r"\|\s*(date|time|timesince|timeuntil)\b(?:\s*:\s*(\"[^\"]*\"|'[^']*'|[\w.]+))?")


def test_it_shows_the_time_of_day_alone_for_today_in_a_time_element_with_the_full_timestamp(monkeypatch):
    monkeypatch.setattr(timezone, "now", lambda: MOMENT + dt.timedelta(hours=3))
    shown = render('{{ moment|when:"time" }}', moment=MOMENT)
    assert shown == '<time datetime="2026-03-14T09:05:07Z" title="14 Mar 2026, 09:05:07 UTC">09:05 UTC</time>'


def test_it_shows_the_day_with_the_time_for_a_moment_before_today(monkeypatch):
    # A chat message from last week must not read as if it were from today.
    monkeypatch.setattr(timezone, "now", lambda: MOMENT + dt.timedelta(days=1))
    shown = render('{{ moment|when:"time" }}', moment=MOMENT)
    assert shown == (
        '<time datetime="2026-03-14T09:05:07Z" title="14 Mar 2026, 09:05:07 UTC">14 Mar 2026, 09:05 UTC</time>'
    )


def test_no_template_shows_a_moment_or_a_day_with_djangos_date_or_time_filters():
    from portal.templatetags.portal_format import DATE_FORMATS

    stray = []
    for name, source in template_sources().items():
        for match in DATE_FILTER.finditer(source):
            name_of_filter, argument = match.groups()
            if name_of_filter != "date" or not argument or argument[1:-1] not in DATE_FORMATS:
                stray.append(f"{name}: {match.group(0)}")
    assert stray == [], f"use |when (or |when:'date', |when_text) for a moment or a day: {stray}"


def test_the_scan_catches_a_moment_shown_with_date_and_lets_a_month_name_pass():
    from portal.templatetags.portal_format import DATE_FORMATS

    def flagged(source):
        return [m.group(0) for m in DATE_FILTER.finditer(source) if (m.group(2) or "")[1:-1] not in DATE_FORMATS]

    assert flagged('{{ a|date:"j M Y" }} {{ b|date }} {{ c|time:"H:i" }} {{ d|timesince }} {{ e|date:f }}') == [
        '|date:"j M Y"',
        "|date",
        '|time:"H:i"',
        "|timesince",
        "|date:f",
    ]
    assert flagged("""{{ m|date:"F Y" }} {{ m|date:'Y-m' }} {{ x|dates }}""") == []


@pytest.mark.django_db
def test_the_chat_shows_each_messages_time_of_day_in_the_convention(client, world):
    from tests.agents.helpers import make_catalogue, make_turn

    catalogue = make_catalogue(world.a.tenant, world.b.tenant)
    conversation, _, invocation = make_turn(world.a.tenant, world.a.member, catalogue.helpdesk)
    client.force_login(world.a.member)

    shown = times(client.get(f"/t/alpha/chat/{conversation.pk}/").content.decode())

    assert when(invocation.user_message.created_at, "time") in shown
    assert when(invocation.assistant_message.created_at, "time") in shown


@pytest.mark.django_db
def test_the_sso_settings_say_when_the_connection_last_changed_in_the_convention(client, world):
    from types import SimpleNamespace

    from tenants.identity.models import SSOConnection
    from tests.identity.sso_helpers import configure_sso, grant_sso_feature

    grant_sso_feature(world.a.tenant)
    idp = SimpleNamespace(issuer="https://login.alpha-corp.example", client_id="portal", client_secret="s3cret-Zq81")
    configure_sso(world.a, idp, verified=False)
    with tenant_context(world.a.tenant):
        SSOConnection.objects.filter(tenant=world.a.tenant).update(updated_at=MOMENT)
    client.force_login(world.a.owner)

    assert f"<dt>Last change</dt><dd>{SHOWN}</dd>" in client.get("/t/alpha/sso/").content.decode()


@pytest.mark.django_db
def test_a_revoked_api_client_says_the_day_it_was_revoked_in_the_convention(client, world):
    from tenants.identity import services as identity_services
    from tenants.identity.models import ApiClient
    from tenants.services import Actor

    actor = Actor(user=world.a.owner, membership=world.a.memberships["owner"])
    with tenant_context(world.a.tenant):
        api_client, _ = identity_services.create_api_client(actor, name="Nightly export", scopes=["tenant:read"])
        ApiClient.objects.filter(pk=api_client.pk).update(revoked_at=MOMENT)
    client.force_login(world.a.owner)

    assert f"Revoked {when(MOMENT, 'date')}" in client.get("/t/alpha/api-clients/").content.decode()


@pytest.mark.django_db
def test_the_invoice_and_usage_pages_show_their_days_in_the_convention(client, world):
    now = timezone.now().replace(microsecond=0)
    record_usage(world.a.tenant, now, user=world.a.member)
    month = month_start(now.date())
    with tenant_context(world.a.tenant):
        invoice = inv.draft_invoice(world.a.tenant, month)
    next_month = (month + dt.timedelta(days=32)).replace(day=1)
    month_end = next_month - dt.timedelta(days=1)
    today = now.astimezone(dt.UTC).date()
    month_ago = today - dt.timedelta(days=29)
    client.force_login(world.a.owner)

    detail = client.get(f"/t/alpha/billing/invoices/{invoice.pk}/").content.decode()
    dashboard = client.get("/t/alpha/billing/", {"range": "30d"}).content.decode()
    events = client.get("/t/alpha/billing/events/", {"range": "30d"}).content.decode()

    assert f"<dt>Period</dt><dd>{when(month)} – {when(month_end)}</dd>" in detail
    assert f"{when(month_ago)} – {when(today)}, by day" in dashboard
    assert f'aria-label="Totals for {render("{{ d|when_text }}", d=month_ago)} – ' in dashboard
    assert f"by {when(month_end)} (" in dashboard  # the quota's forecast
    assert f"{when(month_ago)} – {when(today)}" in events


@pytest.mark.django_db
def test_the_operators_load_page_says_its_window_in_the_convention(client, operator):
    from billing import load

    client.force_login(operator)

    hour = client.get("/operator/load/")
    days = client.get("/operator/load/", {"window": "7d"})

    window = hour.context["window"]
    assert f"({when(window.start, 'time')} – {when(window.end, 'time')}, from the raw events)" in hour.content.decode()
    week = load.load_window("7d", days.context["window"].end)
    assert f"({when(week.first_day)} – {when(week.last_day)}, whole UTC days" in days.content.decode()

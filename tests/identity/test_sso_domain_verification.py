"""Proving control of an SSO domain with a DNS TXT record, against a DNS server on loopback.

Until a claim is proved, it routes no sign-in and the tenant's IdP is trusted for
none of the domain's addresses: typing someone else's domain gets a tenant nothing.
"""

from __future__ import annotations

import html
from types import SimpleNamespace

import pytest

from tenants.context import tenant_context
from tenants.identity import sso
from tenants.identity.models import SSODomain
from tenants.models import AuditLog
from tests.identity.fake_dns import FakeDNS
from tests.identity.sso_helpers import configure_sso, grant_sso_feature
from tests.tenants.helpers import page_text


@pytest.fixture
def dns_server(settings):
    with FakeDNS() as server:
        settings.SSO_DNS_NAMESERVERS = [server.nameserver]
        settings.SSO_DNS_TIMEOUT_SECONDS = 1
        yield server


@pytest.fixture
def pending(world):
    grant_sso_feature(world.a.tenant)
    idp = SimpleNamespace(issuer="https://login.alpha.example", client_id="alpha", client_secret="alpha-secret")
    connection = configure_sso(world.a, idp, verified=False)
    with tenant_context(world.a.tenant):
        claim = SSODomain.objects.get(connection=connection)
    return claim


def page(client, world):
    response = client.get(f"/t/{world.a.tenant.slug}/sso/")
    assert response.status_code == 200
    return html.unescape(response.content.decode())


def check(client, world, domain="alpha.test"):
    return client.post(f"/t/{world.a.tenant.slug}/sso/domains/verify/", {"domain": domain}, follow=True)


def test_an_unverified_domain_routes_no_sign_in_and_its_idp_signs_in_nobody(world, pending):
    assert sso.usable_connection_for_email("member@alpha.test") is None
    with pytest.raises(sso.SSORefused, match="not yet proved that alpha.test is theirs"):
        sso.admit(pending.connection, email="member@alpha.test", email_verified=True, existing_user=None)


def test_the_admin_sees_the_record_to_publish_and_the_check_verifies_it(client, world, pending, dns_server):
    client.force_login(world.a.owner)
    name, value = sso.challenge_record(pending)
    assert name == "_tenant-portal-challenge.alpha.test"
    body = page(client, world)
    assert name in body and value in body and "Waiting for DNS" in body

    dns_server.records[name] = ["v=spf1 -all", value]  # other TXT records beside it are fine
    response = check(client, world)

    assert "alpha.test is verified" in html.unescape(response.content.decode())
    assert dns_server.queries == [name]
    pending.refresh_from_db()
    assert pending.verified_at is not None and pending.verified_by == "dns"
    assert sso.usable_connection_for_email("member@alpha.test").pk == pending.connection_id
    with tenant_context(world.a.tenant):
        entry = AuditLog.objects.get(action="sso.domain_verified")
    assert entry.actor_id == world.a.owner.pk and entry.after == {"domain": "alpha.test", "verified_by": "dns"}


def test_the_losing_tenants_log_names_no_one_from_the_tenant_that_proved_it(client, world, pending, dns_server):
    grant_sso_feature(world.b.tenant)
    squatter = SimpleNamespace(issuer="https://login.bravo.example", client_id="b", client_secret="b")
    configure_sso(world.b, squatter, domains=["alpha.test"], verified=False)
    name, value = sso.challenge_record(pending)
    dns_server.records[name] = [value]
    client.force_login(world.a.owner)

    check(client, world, "alpha.test")

    with tenant_context(world.b.tenant):
        removed = AuditLog.objects.get(action="sso.domain_claim_removed")
    assert (removed.actor_id, removed.actor_email, removed.ip_address) == (None, "", None)
    assert removed.after == {"reason": "another organisation proved control of the domain", "by": "platform"}
    client.force_login(world.b.owner)
    log_page = page_text(client.get(f"/t/{world.b.tenant.slug}/audit/"))
    assert "sso.domain_claim_removed" in log_page and world.a.owner.email not in log_page


@pytest.mark.parametrize(
    ("records", "silent", "message"),
    [
        ({}, False, "There is no TXT record at _tenant-portal-challenge.alpha.test yet"),
        ({"_tenant-portal-challenge.alpha.test": ["tenant-portal-verification=someone-elses"]}, False, "does not hold"),
        ({}, True, "The DNS lookup timed out"),
    ],
    ids=["no-record", "wrong-value", "timeout"],
)
def test_a_failed_check_says_why_and_changes_nothing(client, world, pending, dns_server, records, silent, message):
    client.force_login(world.a.owner)
    dns_server.records.update(records)
    dns_server.silent = silent

    response = check(client, world)

    assert response.status_code == 200
    assert message in html.unescape(response.content.decode())
    pending.refresh_from_db()
    assert pending.verified_at is None
    assert sso.usable_connection_for_email("member@alpha.test") is None


def test_members_and_other_tenants_cannot_verify_a_claim(client, world, pending, dns_server):
    name, value = sso.challenge_record(pending)
    dns_server.records[name] = [value]
    client.force_login(world.a.member)
    response = client.post(f"/t/{world.a.tenant.slug}/sso/domains/verify/", {"domain": "alpha.test"})
    assert response.status_code == 403
    client.force_login(world.b.owner)
    response = client.post(f"/t/{world.a.tenant.slug}/sso/domains/verify/", {"domain": "alpha.test"})
    assert response.status_code == 404
    pending.refresh_from_db()
    assert pending.verified_at is None


def test_an_operator_can_vouch_for_a_claim_and_says_so_in_the_tenants_log(client, world, pending, operator):
    client.force_login(operator)
    response = client.post(
        f"/operator/tenants/{world.a.tenant.slug}/sso/verify-domain/", {"domain": "alpha.test"}, follow=True
    )

    assert "alpha.test is verified for" in html.unescape(response.content.decode())
    pending.refresh_from_db()
    assert pending.verified_by == "operator"
    with tenant_context(world.a.tenant):
        assert AuditLog.objects.filter(action="sso.domain_verified", actor=operator).exists()


def test_garbage_domains_get_a_clear_error(client, world, pending, dns_server):
    client.force_login(world.a.owner)
    for junk in ("", "x" * 300, "\x00", "bravo.test"):
        response = check(client, world, junk)
        assert "does not claim this domain" in html.unescape(response.content.decode())
    assert dns_server.queries == []

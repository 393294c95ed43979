"""The tenant's single sign-on settings page (/t/<slug>/sso/) and the services behind it."""

from __future__ import annotations

import html
import socket
from io import StringIO
from types import SimpleNamespace

import pytest
from allauth.socialaccount.models import SocialApp
from django.core.exceptions import PermissionDenied
from django.core.management import CommandError, call_command

from tenants.context import tenant_context
from tenants.identity import sso
from tenants.identity.models import SSOConnection, SSODomain
from tenants.models import AuditLog
from tenants.services import ServiceError
from tests import factories
from tests.identity.sso_helpers import configure_sso, grant_sso_feature
from tests.tenants.helpers import actor, audit_entries

ISSUER = "https://login.alpha-corp.example"
SECRET = "first-secret-Zq81"


def url(side) -> str:
    return f"/t/{side.tenant.slug}/sso/"


def form(**changes) -> dict:
    data = {
        "issuer": ISSUER,
        "client_id": "portal-client",
        "client_secret": SECRET,
        "domains": "alpha.test\nAlpha-Corp.example.",
        "default_role": "member",
        "enabled": "on",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def text(response) -> str:
    return html.unescape(response.content.decode())


def connection_of(side) -> SSOConnection | None:
    return SSOConnection.objects.filter(tenant=side.tenant).first()


@pytest.fixture
def alpha(world):
    grant_sso_feature(world.a.tenant)
    return world.a


@pytest.fixture
def owner_client(client, alpha):
    client.force_login(alpha.owner)
    return client


# --- who may see it ---------------------------------------------------------------------


@pytest.mark.parametrize("role", ["owner", "admin"])
def test_it_shows_the_page_to_owners_and_admins(client, alpha, role):
    client.force_login(alpha.user(role))

    response = client.get(url(alpha))

    assert response.status_code == 200
    body = text(response)
    assert "http://testserver/accounts/sso/tenant-alpha/callback/" in body


def test_only_an_owner_is_offered_to_set_it_up(client, alpha):
    client.force_login(alpha.owner)
    assert "Set up single sign-on" in text(client.get(url(alpha)))

    client.force_login(alpha.admin)
    body = text(client.get(url(alpha)))
    assert "Set up single sign-on" not in body
    assert "Only an owner of Alpha" in body


@pytest.mark.parametrize("role", ["member", "billing"])
def test_it_forbids_the_page_to_other_roles(client, alpha, role):
    client.force_login(alpha.user(role))

    assert client.get(url(alpha)).status_code == 403
    assert client.post(url(alpha), form()).status_code == 403
    assert connection_of(alpha) is None


def test_it_answers_404_to_the_other_tenants_admin(client, world, alpha):
    client.force_login(world.b.admin)

    assert client.get(url(alpha)).status_code == 404
    assert client.post(url(alpha), form()).status_code == 404
    assert client.post(f"/t/{alpha.tenant.slug}/sso/disable/").status_code == 404
    assert connection_of(alpha) is None


@pytest.mark.parametrize("role", ["owner", "admin"])
def test_it_is_linked_from_the_security_page(client, alpha, role):
    client.force_login(alpha.user(role))
    body = text(client.get(f"/t/{alpha.tenant.slug}/security/"))
    assert f'href="{url(alpha)}">Single sign-on settings</a>' in body
    assert f'href="/t/{alpha.tenant.slug}/security/">' in text(client.get(url(alpha)))  # and back


def test_the_security_page_says_when_the_tier_lacks_single_sign_on(client, world):
    client.force_login(world.b.owner)
    body = text(client.get(f"/t/{world.b.tenant.slug}/security/"))
    assert "Not in your tier" in body and f'href="{url(world.b)}">Learn more</a>' in body


def test_a_tenant_without_the_feature_gets_the_not_in_tier_page(client, world):
    client.force_login(world.b.owner)

    response = client.get(url(world.b))

    assert response.status_code == 403
    assert "Single sign-on is not in your tier" in text(response)
    assert "Standard-Test" in text(response)
    assert client.post(url(world.b), form(domains="bravo.test")).status_code == 403
    assert connection_of(world.b) is None


def test_the_service_refuses_a_tenant_without_the_feature(world):
    with tenant_context(world.b.tenant), pytest.raises(ServiceError, match="not included"):
        sso.save_sso_connection(
            actor(world.b, "owner"), issuer=ISSUER, client_id="c", client_secret="s", domains=["bravo.test"]
        )


# --- saving -------------------------------------------------------------------------------


def test_it_saves_the_connection_and_keeps_allauth_in_sync(owner_client, alpha):
    response = owner_client.post(url(alpha), form(default_role="admin"))

    assert response.status_code == 302
    connection = connection_of(alpha)
    assert connection.issuer == ISSUER
    assert connection.provider_id == "tenant-alpha"
    assert connection.default_role == "admin"
    assert sso.domains_of(connection) == ["alpha-corp.example", "alpha.test"]
    assert sso.client_secret(connection) == SECRET
    assert SECRET not in connection.client_secret_encrypted
    app = SocialApp.objects.get(provider_id="tenant-alpha")
    assert app.provider == "openid_connect"
    assert app.client_id == "portal-client"
    assert app.secret == ""
    assert app.settings["server_url"] == ISSUER
    assert app.settings["oauth_pkce_enabled"] is True
    assert app.settings["verified_email"] == ["alpha-corp.example", "alpha.test"]


def test_it_audits_the_change_without_the_secret(owner_client, alpha):
    owner_client.post(url(alpha), form())

    [entry] = audit_entries(alpha.tenant, "sso.created")
    assert entry.actor == alpha.owner
    assert entry.after["domains"] == ["alpha-corp.example", "alpha.test"]
    assert entry.after["client_secret"] == "set"
    assert SECRET not in str(entry.after)


def test_the_secret_is_write_only_and_a_blank_one_keeps_the_old(owner_client, alpha):
    owner_client.post(url(alpha), form())

    page = text(owner_client.get(url(alpha)))
    assert SECRET not in page
    assert "A secret is stored" in page

    owner_client.post(url(alpha), form(client_secret="", client_id="renamed-client"))
    assert sso.client_secret(connection_of(alpha)) == SECRET
    assert SocialApp.objects.get(provider_id="tenant-alpha").client_id == "renamed-client"
    [entry] = audit_entries(alpha.tenant, "sso.updated")
    assert entry.before == {"client_id": "portal-client"}
    assert entry.after == {"client_id": "renamed-client"}

    owner_client.post(url(alpha), form(client_secret="rotated-secret", client_id="renamed-client"))
    assert sso.client_secret(connection_of(alpha)) == "rotated-secret"
    assert audit_entries(alpha.tenant, "sso.updated")[-1].after == {"client_secret": "replaced"}


def test_saving_the_same_settings_again_changes_and_audits_nothing(owner_client, alpha):
    owner_client.post(url(alpha), form())
    owner_client.post(url(alpha), form(client_secret=""))

    assert audit_entries(alpha.tenant, "sso.updated") == []


def test_removing_a_domain_releases_it(owner_client, world, alpha):
    owner_client.post(url(alpha), form())
    owner_client.post(url(alpha), form(domains="alpha.test", client_secret=""))

    assert sorted(SSODomain.objects.values_list("domain", flat=True)) == ["alpha.test"]
    assert SocialApp.objects.get(provider_id="tenant-alpha").settings["verified_email"] == ["alpha.test"]


def test_turning_it_off_removes_the_allauth_app_and_is_audited(owner_client, alpha):
    owner_client.post(url(alpha), form())

    response = owner_client.post(f"/t/{alpha.tenant.slug}/sso/disable/")

    assert response.status_code == 302
    assert connection_of(alpha).enabled is False
    assert not SocialApp.objects.filter(provider_id="tenant-alpha").exists()
    [entry] = audit_entries(alpha.tenant, "sso.disabled")
    assert (entry.before, entry.after) == ({"enabled": True}, {"enabled": False})
    # Claims and settings stay; switching on again is one save.
    assert sso.domains_of(connection_of(alpha)) == ["alpha-corp.example", "alpha.test"]
    owner_client.post(url(alpha), form(client_secret=""))
    assert SocialApp.objects.filter(provider_id="tenant-alpha").exists()


def test_turning_it_off_twice_says_so(owner_client, alpha):
    owner_client.post(url(alpha), form())
    owner_client.post(f"/t/{alpha.tenant.slug}/sso/disable/")

    response = owner_client.post(f"/t/{alpha.tenant.slug}/sso/disable/", follow=True)

    assert "already switched off" in text(response)
    assert len(audit_entries(alpha.tenant, "sso.disabled")) == 1


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_turning_it_off_accepts_only_post(owner_client, alpha, method):
    owner_client.post(url(alpha), form())

    assert owner_client.generic(method, f"/t/{alpha.tenant.slug}/sso/disable/").status_code == 405
    assert connection_of(alpha).enabled is True


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("issuer", "", "This field is required"),
        ("issuer", "not a url", "Enter the issuer URL"),
        ("issuer", "ftp://login.example.com", "Enter the issuer URL"),
        ("issuer", "http://login.example.com", "must start with https://"),
        ("issuer", "https://127.0.0.1:8443", "public address"),
        ("issuer", "https://10.1.2.3/oidc", "public address"),
        ("issuer", "https://169.254.169.254/latest", "public address"),
        ("issuer", "https://localhost", "public address"),
        ("issuer", "https://metadata", "public address"),
        ("issuer", "https://admin:pw@login.example.com", "user name or password"),
        ("issuer", "https://login.example.com/?tenant=1", "no query string"),
        ("issuer", "https://login.example.com:99999", "not a valid URL"),
        ("issuer", "https://login.example.com/\x00", "Null characters are not allowed"),
        ("issuer", "https://" + "a" * 600 + ".example", "at most 500 characters"),
        ("client_id", "", "This field is required"),
        ("client_id", "has spaces", "Enter the client ID"),
        ("client_secret", "", "Enter the client secret"),
        ("client_secret", "x" * 1001, "at most 1000 characters"),
        ("domains", "", "This field is required"),
        ("domains", "not a domain", "is not a domain name"),
        ("domains", "localhost", "is not a domain name"),
        ("domains", "gmail.com", "public email provider"),
        ("domains", "-bad-.example.com", "is not a domain name"),
        ("domains", "alpha.test\x00", "Null characters are not allowed"),
        ("domains", "\n".join(f"d{i}.example.com" for i in range(21)), "At most 20 domains"),
        ("default_role", "owner", "Select a valid choice"),
        ("default_role", "emperor", "Select a valid choice"),
    ],
)
def test_bad_input_gets_form_errors_and_saves_nothing(owner_client, alpha, field, value, message):
    response = owner_client.post(url(alpha), form(**{field: value}))

    assert response.status_code == 400
    assert message in text(response)
    assert connection_of(alpha) is None
    assert not SocialApp.objects.exists()


def test_a_domain_verified_by_another_tenant_is_refused_without_naming_it(owner_client, world, alpha):
    grant_sso_feature(world.b.tenant)
    configure_sso(world.b, SimpleNamespace(issuer="https://login.bravo.example", client_id="b", client_secret="b"))

    response = owner_client.post(url(alpha), form(domains="alpha.test\nbravo.test"))

    assert response.status_code == 400
    body = text(response)
    assert "bravo.test is already verified by another organisation" in body
    assert "Bravo" not in body
    assert connection_of(alpha) is None


def test_a_pending_claim_does_not_lock_the_domains_owner_out(owner_client, world, alpha):
    """First come is not first served: a squatter's unverified claim routes nobody and
    blocks nobody; the tenant that proves the domain keeps it and the squatter's claim goes."""
    grant_sso_feature(world.b.tenant)
    squatter = SimpleNamespace(issuer="https://login.bravo.example", client_id="b", client_secret="b")
    configure_sso(world.b, squatter, domains=["alpha.test"], verified=False)
    assert sso.usable_connection_for_email("someone@alpha.test") is None

    response = owner_client.post(url(alpha), form(domains="alpha.test"))
    assert response.status_code == 302
    mine = connection_of(alpha)
    assert sso.usable_connection_for_email("someone@alpha.test") is None  # not proved yet either

    sso.operator_verify_domain(alpha.tenant, "alpha.test", actor=None)

    assert sso.usable_connection_for_email("someone@alpha.test").pk == mine.pk
    with tenant_context(world.b.tenant):
        assert sso.domains_of(sso.connection_of(world.b.tenant)) == []
        removed = AuditLog.objects.filter(action="sso.domain_claim_removed").get()
    assert removed.before == {"domain": "alpha.test"}


def test_a_domain_an_operator_uses_cannot_be_claimed(owner_client, alpha):
    factories.make_user("ops@alpha-corp.example", is_staff=True)

    response = owner_client.post(url(alpha), form())

    assert response.status_code == 400
    assert "alpha-corp.example is reserved by the platform" in text(response)


def test_a_loopback_issuer_is_allowed_only_where_configured(owner_client, alpha, settings):
    settings.SSO_ALLOW_LOOPBACK_ISSUERS = True

    assert owner_client.post(url(alpha), form(issuer="http://127.0.0.1:9000")).status_code == 302
    assert connection_of(alpha).issuer == "http://127.0.0.1:9000"


def answer_for(monkeypatch, name: str, address: str | None) -> None:
    """DNS answers `address` for `name` (None: the name does not exist); no real resolver is asked."""
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host != name:
            return real_getaddrinfo(host, port, *args, **kwargs)
        if address is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real_getaddrinfo(address, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "a loopback address"),
        ("10.0.0.5", "a private address"),
        ("192.168.1.1", "a private address"),
        ("169.254.10.1", "a link-local address"),
        ("169.254.169.254", "the cloud metadata service"),
        ("fd00:ec2::254", "the cloud metadata service"),
        ("::1", "a loopback address"),
        ("100.64.0.1", "not a public address"),
    ],
)
def test_an_issuer_whose_name_resolves_to_an_internal_address_is_refused_with_the_reason(
    owner_client, alpha, monkeypatch, address, reason
):
    answer_for(monkeypatch, "login.alpha-corp.com", address)

    response = owner_client.post(url(alpha), form(issuer="https://login.alpha-corp.com"))

    assert response.status_code == 400
    assert f"login.alpha-corp.com resolves to {address}, {reason}." in text(response)
    assert connection_of(alpha) is None


def test_an_issuer_whose_name_does_not_resolve_is_refused(owner_client, alpha, monkeypatch):
    answer_for(monkeypatch, "login.alpha-corp.com", None)

    response = owner_client.post(url(alpha), form(issuer="https://login.alpha-corp.com"))

    assert response.status_code == 400
    assert "The issuer's host name login.alpha-corp.com could not be found" in text(response)
    assert connection_of(alpha) is None


def test_an_issuer_whose_name_resolves_to_a_public_address_is_saved(owner_client, alpha, monkeypatch):
    answer_for(monkeypatch, "login.alpha-corp.com", "93.184.215.14")

    assert owner_client.post(url(alpha), form(issuer="https://login.alpha-corp.com")).status_code == 302
    assert connection_of(alpha).issuer == "https://login.alpha-corp.com"


def test_loopback_issuers_lift_the_resolution_check_as_they_lift_the_connection_check(
    owner_client, alpha, monkeypatch, settings
):
    settings.SSO_ALLOW_LOOPBACK_ISSUERS = True  # development, and the tests' fake IdP (as in sso_http)
    answer_for(monkeypatch, "login.alpha-corp.com", "127.0.0.1")

    assert owner_client.post(url(alpha), form(issuer="https://login.alpha-corp.com")).status_code == 302


def test_an_issuer_is_checked_at_save_for_every_caller(alpha, monkeypatch):
    answer_for(monkeypatch, "login.alpha-corp.com", "10.0.0.5")

    with tenant_context(alpha.tenant), pytest.raises(ServiceError) as refused:
        sso.save_sso_connection(
            actor(alpha, "owner"),
            issuer="https://login.alpha-corp.com",
            client_id="c",
            client_secret="s",
            domains=["alpha.test"],
        )

    assert "a private address" in refused.value.message_dict["issuer"][0]


def test_a_discovery_url_is_taken_as_its_issuer(owner_client, alpha):
    owner_client.post(url(alpha), form(issuer=f"{ISSUER}/.well-known/openid-configuration"))

    assert connection_of(alpha).issuer == ISSUER


def test_internationalised_domains_are_stored_in_their_ascii_form(owner_client, alpha):
    owner_client.post(url(alpha), form(domains="Bücher.example"))

    assert sso.domains_of(connection_of(alpha)) == ["xn--bcher-kva.example"]


BAD_BODIES = [
    (b"", "application/x-www-form-urlencoded"),
    (b"%%%&&&===", "application/x-www-form-urlencoded"),
    (b"issuer=\xff\xfe&domains=\xff", "application/x-www-form-urlencoded"),
    (b"issuer=https%3A%2F%2Fa.example&issuer=x&domains=a.example&domains=b", "application/x-www-form-urlencoded"),
    (b'{"issuer": "https://a.example"}', "application/json"),
    (b"--zzz\r\nnonsense", "multipart/form-data; boundary=zzz"),
    (b"--zzz\r\nnonsense", "multipart/form-data"),
]


@pytest.mark.parametrize(("body", "content_type"), BAD_BODIES)
def test_a_malformed_body_is_a_400_never_a_500(owner_client, alpha, body, content_type):
    response = owner_client.generic("POST", url(alpha), body, content_type)

    assert response.status_code == 400
    assert connection_of(alpha) is None


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE"])
def test_the_page_answers_other_methods_with_405(owner_client, alpha, method):
    assert owner_client.generic(method, url(alpha), b"issuer=x").status_code == 405


# --- the platform's way out --------------------------------------------------------------


def test_an_operator_can_switch_a_tenants_sso_off_from_the_command_line(owner_client, alpha):
    owner_client.post(url(alpha), form())
    out = StringIO()

    call_command("sso_disable", "alpha", "--reason", "IdP outage, ticket 4711", stdout=out)

    assert "is off" in out.getvalue()
    assert connection_of(alpha).enabled is False
    assert not SocialApp.objects.filter(provider_id="tenant-alpha").exists()
    [entry] = audit_entries(alpha.tenant, "sso.disabled")
    assert entry.actor is None
    assert entry.after["reason"] == "IdP outage, ticket 4711"


def test_the_command_needs_a_known_tenant_and_a_reason(alpha):
    with pytest.raises(CommandError, match="No tenant"):
        call_command("sso_disable", "nobody", "--reason", "x")
    with pytest.raises(CommandError, match="Say why"):
        call_command("sso_disable", "alpha", "--reason", " ")


# --- who chooses the identity provider ---------------------------------------------------


def test_an_admin_cannot_set_single_sign_on_up(client, alpha):
    with tenant_context(alpha.tenant), pytest.raises(PermissionDenied):
        sso.save_sso_connection(
            actor(alpha, "admin"), issuer=ISSUER, client_id="c", client_secret="s", domains=["alpha.test"]
        )
    client.force_login(alpha.admin)

    assert client.post(url(alpha), form()).status_code == 403
    assert connection_of(alpha) is None


@pytest.mark.parametrize(
    "change",
    [{"issuer": "https://idp.admins-own.example"}, {"client_id": "admins-own-client"}],
    ids=["issuer", "client_id"],
)
def test_an_admin_cannot_change_which_identity_provider_signs_people_in(owner_client, alpha, change):
    owner_client.post(url(alpha), form())
    fields = {"issuer": ISSUER, "client_id": "portal-client", "client_secret": "", "domains": ["alpha.test"]}

    with tenant_context(alpha.tenant), pytest.raises(PermissionDenied):
        sso.save_sso_connection(actor(alpha, "admin"), **{**fields, **change})

    connection = connection_of(alpha)
    assert (connection.issuer, connection.client_id) == (ISSUER, "portal-client")
    assert audit_entries(alpha.tenant, "sso.updated") == []


def test_the_admins_form_keeps_the_identity_provider_whatever_is_posted(client, owner_client, alpha):
    owner_client.post(url(alpha), form())
    client.force_login(alpha.admin)

    response = client.post(
        url(alpha),
        form(issuer="https://idp.admins-own.example", client_id="admins-own", client_secret="", default_role="admin"),
    )

    assert response.status_code == 302, response.context["form"].errors
    connection = connection_of(alpha)
    assert (connection.issuer, connection.client_id, connection.default_role) == (ISSUER, "portal-client", "admin")
    page = text(client.get(url(alpha)))
    assert "Only an owner can change the identity provider" in page


def test_an_admin_may_still_change_the_domains_policy_and_secret(owner_client, alpha):
    owner_client.post(url(alpha), form())

    with tenant_context(alpha.tenant):
        sso.save_sso_connection(
            actor(alpha, "admin"),
            issuer=ISSUER,
            client_id="portal-client",
            client_secret="rotated-by-admin",
            domains=["alpha.test"],
            default_role="admin",
        )

    connection = connection_of(alpha)
    assert sso.domains_of(connection) == ["alpha.test"]
    assert (connection.default_role, sso.client_secret(connection)) == ("admin", "rotated-by-admin")
    assert audit_entries(alpha.tenant, "sso.updated")[-1].actor == alpha.admin


def test_a_new_issuer_must_prove_every_domain_again(owner_client, alpha):
    owner_client.post(url(alpha), form())
    sso.operator_verify_domain(alpha.tenant, "alpha.test", actor=None)
    old_token = SSODomain.objects.get(domain="alpha.test").verification_token

    owner_client.post(url(alpha), form(issuer="https://login.new-idp.example", client_secret=""))

    claim = SSODomain.objects.get(domain="alpha.test")
    assert (claim.verified_at, claim.verified_by) == (None, "")
    assert claim.verification_token != old_token  # the old TXT record proves nothing for the new IdP
    assert sso.trusted_domains_of(connection_of(alpha)) == []
    [entry] = audit_entries(alpha.tenant, "sso.updated")
    assert entry.after["issuer"] == "https://login.new-idp.example"
    assert entry.after["domains_unverified"] == ["alpha.test"]
    assert entry.after["account_links_removed"] == 0


def test_the_same_issuer_keeps_the_domains_proved(owner_client, alpha):
    owner_client.post(url(alpha), form())
    sso.operator_verify_domain(alpha.tenant, "alpha.test", actor=None)

    owner_client.post(url(alpha), form(issuer=ISSUER + "/", client_secret="", default_role="admin"))

    assert SSODomain.objects.get(domain="alpha.test").verified_at is not None

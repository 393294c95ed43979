"""Signing in through a tenant's own identity provider, end to end.

A fake OpenID provider runs on loopback (tests/identity/fake_idp.py); Django's
test client is the browser, and `idp.visit()` is the browser's stop at the IdP.
Tenant A ("alpha") claims alpha.test for its IdP; tenant B has no SSO.
"""

from __future__ import annotations

import html
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from allauth.account.models import EmailAddress
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.socialaccount.internal import statekit
from allauth.socialaccount.models import SocialAccount, SocialApp
from django.core.exceptions import PermissionDenied
from django.test import Client

from tenants.adapters import SocialAccountAdapter
from tenants.context import tenant_context
from tenants.identity import sso
from tenants.identity.models import SSOConnection
from tenants.models import InvitationStatus, User
from tests import factories
from tests.identity.fake_idp import FakeIdP, s256
from tests.identity.sso_helpers import (
    configure_sso,
    finish_sign_in,
    sign_in_via_sso,
    signed_in_user,
    social_accounts,
    start_sign_in,
)
from tests.tenants.helpers import actor, audit_entries, member_roles, reload

PROVIDER_ID = "tenant-alpha"


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def error_text(response) -> str:
    return html.unescape(response.content.decode())


# --- the happy path -------------------------------------------------------------------


def test_it_signs_a_new_person_in_and_makes_them_a_member_of_that_tenant_only(client, world, idp, alpha_sso):
    idp.user = {"sub": "okta|0001", "email": "Newcomer@Alpha.test", "email_verified": True, "name": "Nia Newcomer"}

    response = sign_in_via_sso(client, idp, "newcomer@alpha.test")

    assert response.status_code == 302
    assert response["Location"] == "/"
    user = signed_in_user(client)
    assert user.email == "newcomer@alpha.test"
    assert user.full_name == "Nia Newcomer"
    assert not user.has_usable_password()
    assert member_roles(world.a.tenant)["newcomer@alpha.test"] == "member"
    assert "newcomer@alpha.test" not in member_roles(world.b.tenant)
    assert social_accounts(PROVIDER_ID) == [("okta|0001", "newcomer@alpha.test")]
    [entry] = audit_entries(world.a.tenant, "membership.created")[-1:]
    assert entry.actor == user
    assert entry.after == {"role": "member", "via": "sso", "provider_id": PROVIDER_ID}


def test_it_uses_the_connections_default_role(client, world, idp, alpha_sso):
    configure_sso(world.a, idp, default_role="billing")

    sign_in_via_sso(client, idp, "newcomer@alpha.test")

    assert member_roles(world.a.tenant)["newcomer@alpha.test"] == "billing"


def test_it_sends_pkce_a_nonce_and_state_and_the_idp_gets_them_back(client, world, idp, alpha_sso):
    authorize_url = start_sign_in(client, "newcomer@alpha.test")
    sent = query_of(authorize_url)

    assert authorize_url.startswith(f"{idp.issuer}/authorize?")
    assert sent["client_id"] == idp.client_id
    assert sent["redirect_uri"] == f"http://testserver/accounts/sso/{PROVIDER_ID}/callback/"
    assert sent["response_type"] == "code"
    assert set(sent["scope"].split()) == {"openid", "email", "profile"}
    assert sent["code_challenge_method"] == "S256"
    assert len(sent["code_challenge"]) == 43
    assert len(sent["nonce"]) >= 32
    assert sent["state"]
    assert sent["login_hint"] == "newcomer@alpha.test"

    response = finish_sign_in(client, idp, authorize_url)

    assert response.status_code == 302
    [token_request] = idp.token_requests
    assert token_request["client_id"] == idp.client_id
    assert token_request["client_secret"] == idp.client_secret
    assert s256(token_request["code_verifier"]) == sent["code_challenge"]
    assert jwt.decode(idp.issued_id_tokens[0], options={"verify_signature": False})["nonce"] == sent["nonce"]


def test_a_second_sign_in_duplicates_nothing(client, world, idp, alpha_sso):
    sign_in_via_sso(client, idp, "newcomer@alpha.test")
    client.post("/accounts/logout/")
    assert signed_in_user(client) is None

    response = sign_in_via_sso(client, idp, "newcomer@alpha.test")

    assert response.status_code == 302
    assert signed_in_user(client).email == "newcomer@alpha.test"
    assert User.objects.filter(email="newcomer@alpha.test").count() == 1
    assert social_accounts(PROVIDER_ID) == [("idp-user-1", "newcomer@alpha.test")]
    assert list(member_roles(world.a.tenant)).count("newcomer@alpha.test") == 1
    assert len(audit_entries(world.a.tenant, "membership.created")) == 1


def test_it_links_an_existing_member_without_changing_their_role(client, world, idp, alpha_sso):
    idp.user = {"sub": "okta|admin", "email": "admin@alpha.test", "email_verified": True}

    sign_in_via_sso(client, idp, "admin@alpha.test")

    assert signed_in_user(client) == world.a.admin
    assert member_roles(world.a.tenant)["admin@alpha.test"] == "admin"
    assert social_accounts(PROVIDER_ID) == [("okta|admin", "admin@alpha.test")]
    assert audit_entries(world.a.tenant, "membership.created") == []
    [linked] = audit_entries(world.a.tenant, "sso.account_linked")
    assert linked.actor == world.a.admin
    assert linked.after == {
        "provider_id": PROVIDER_ID,
        "issuer": idp.issuer,
        "subject_fingerprint": sso.subject_fingerprint(alpha_sso, "okta|admin"),
    }
    assert world.a.admin.__class__.objects.get(pk=world.a.admin.pk).has_usable_password()


def test_it_accepts_an_open_invitation_with_its_role(client, world, idp, alpha_sso):
    invitation = factories.make_invitation(world.a.tenant, "invited@alpha.test", role="admin", invited_by=world.a.owner)
    idp.user = {"sub": "okta|invited", "email": "invited@alpha.test", "email_verified": True}

    sign_in_via_sso(client, idp, "invited@alpha.test")

    assert member_roles(world.a.tenant)["invited@alpha.test"] == "admin"
    assert reload(invitation).status == InvitationStatus.ACCEPTED


def test_it_honours_a_safe_next_url_and_ignores_a_foreign_one(client, world, idp, alpha_sso):
    response = client.post("/accounts/sso/", {"email": "newcomer@alpha.test", "next": "/t/alpha/"})
    assert finish_sign_in(client, idp, response["Location"])["Location"] == "/t/alpha/"

    client.post("/accounts/logout/")
    response = client.post("/accounts/sso/", {"email": "newcomer@alpha.test", "next": "https://evil.example/"})
    assert finish_sign_in(client, idp, response["Location"])["Location"] == "/"


# --- what must fail -------------------------------------------------------------------


def test_a_wrong_pkce_verifier_fails_and_creates_nobody(client, world, idp, alpha_sso):
    authorize_url = start_sign_in(client, "newcomer@alpha.test")
    session = client.session
    states = session[statekit.STATES_SESSION_KEY]
    state_id = query_of(authorize_url)["state"]
    state, created, provider_id = states[state_id]
    states[state_id] = ({**state, "pkce_code_verifier": "x" * 43}, created, provider_id)
    session[statekit.STATES_SESSION_KEY] = states
    session.save()

    response = finish_sign_in(client, idp, authorize_url)

    assert response.status_code == 401
    assert "Alpha Inc's identity provider did not work" in error_text(response)
    assert idp.token_errors == ["invalid_grant: PKCE verification failed"]
    assert signed_in_user(client) is None
    assert not User.objects.filter(email="newcomer@alpha.test").exists()
    assert social_accounts(PROVIDER_ID) == []


def test_an_address_outside_the_claimed_domains_is_refused(client, world, idp, alpha_sso):
    idp.user = {"sub": "okta|stranger", "email": "stranger@elsewhere.test", "email_verified": True}

    response = sign_in_via_sso(client, idp, "newcomer@alpha.test")

    assert response.status_code == 403
    body = error_text(response)
    assert "single sign-on is for addresses at alpha.test" in body
    assert "stranger@elsewhere.test" in body
    assert signed_in_user(client) is None
    assert not User.objects.filter(email="stranger@elsewhere.test").exists()
    assert "stranger@elsewhere.test" not in member_roles(world.a.tenant)
    assert social_accounts(PROVIDER_ID) == []


def test_an_address_of_the_other_tenants_domain_is_refused(client, world, idp, alpha_sso):
    idp.user = {"sub": "okta|bravo-owner", "email": "owner@bravo.test", "email_verified": True}

    response = sign_in_via_sso(client, idp, "newcomer@alpha.test")

    assert response.status_code == 403
    assert signed_in_user(client) is None
    assert social_accounts(PROVIDER_ID) == []


def test_an_address_the_idp_calls_unverified_is_refused(client, world, idp, alpha_sso):
    idp.user = {"sub": "okta|2", "email": "newcomer@alpha.test", "email_verified": False}

    response = sign_in_via_sso(client, idp, "newcomer@alpha.test")

    assert response.status_code == 403
    assert "is not verified" in error_text(response)
    assert not User.objects.filter(email="newcomer@alpha.test").exists()


@pytest.mark.parametrize(
    ("misbehaviour", "value"),
    [
        ("sign_with_foreign_key", True),
        ("id_token_overrides", {"nonce": "a-nonce-from-another-sign-in"}),
        ("id_token_overrides", {"nonce": None}),
        ("id_token_overrides", {"aud": "some-other-client"}),
        ("id_token_overrides", {"iss": "https://idp.evil.example"}),
        ("id_token_overrides", {"exp": 1_000_000}),
        ("userinfo_overrides", {"sub": "someone-else"}),
        ("discovery_overrides", {"issuer": "https://idp.evil.example"}),
    ],
)
def test_an_id_token_that_fails_a_check_signs_nobody_in(client, world, idp, alpha_sso, misbehaviour, value):
    authorize_url = start_sign_in(client, "newcomer@alpha.test")
    setattr(idp, misbehaviour, value)

    response = finish_sign_in(client, idp, authorize_url)

    assert response.status_code == 401
    assert signed_in_user(client) is None
    assert not User.objects.filter(email="newcomer@alpha.test").exists()
    assert social_accounts(PROVIDER_ID) == []


def test_an_account_that_belongs_to_another_tenant_is_not_taken_over(client, world, idp, alpha_sso):
    guest = factories.make_user("guest@alpha.test")
    factories.add_member(world.b.tenant, guest, "admin")
    idp.user = {"sub": "okta|guest", "email": "guest@alpha.test", "email_verified": True}

    response = sign_in_via_sso(client, idp, "guest@alpha.test")

    assert response.status_code == 403
    assert "belongs to another organisation" in error_text(response)
    assert signed_in_user(client) is None
    assert "guest@alpha.test" not in member_roles(world.a.tenant)
    assert social_accounts(PROVIDER_ID) == []


def test_an_address_another_account_holds_unconfirmed_gets_an_account_of_its_own(client, world, idp, alpha_sso):
    EmailAddress.objects.create(user=world.b.member, email="newcomer@alpha.test", verified=False, primary=False)

    response = sign_in_via_sso(client, idp, "newcomer@alpha.test")

    assert response.status_code == 302
    newcomer = signed_in_user(client)
    assert (newcomer.email, newcomer == world.b.member) == ("newcomer@alpha.test", False)
    assert social_accounts(PROVIDER_ID) == [("idp-user-1", "newcomer@alpha.test")]
    assert member_roles(world.a.tenant)["newcomer@alpha.test"] == "member"
    assert world.b.member.email not in member_roles(world.a.tenant)
    # The IdP proved whose address it is; the unconfirmed copy on the other account goes.
    assert not EmailAddress.objects.filter(user=world.b.member, email="newcomer@alpha.test").exists()


def add_address_on_the_email_page(client, user, email: str, *, make_primary: bool = False) -> None:
    client.force_login(user)
    client.post("/accounts/email/", {"action_add": "", "email": email})
    if make_primary:
        client.post("/accounts/email/", {"action_primary": "", "email": email})
    client.logout()


@pytest.mark.parametrize("make_primary", [False, True], ids=["secondary", "made-primary"])
def test_an_address_an_outsider_typed_in_never_takes_the_invitees_sso_sign_in(
    client, world, idp, alpha_sso, make_primary
):
    # An account with no confirmed address at all: allauth lets it make any address primary.
    attacker = factories.make_user("drifter@nowhere.test", address_proven=False)
    invitation = factories.make_invitation(world.a.tenant, "newhire@alpha.test", role="admin", invited_by=world.a.owner)
    add_address_on_the_email_page(client, attacker, "newhire@alpha.test", make_primary=make_primary)
    idp.user = {"sub": "okta|newhire", "email": "newhire@alpha.test", "email_verified": True}

    response = sign_in_via_sso(client, idp, "newhire@alpha.test")

    assert response.status_code == 302
    assert signed_in_user(client).email == "newhire@alpha.test"
    assert User.objects.get(pk=attacker.pk).email == "drifter@nowhere.test"
    assert social_accounts(PROVIDER_ID) == [("okta|newhire", "newhire@alpha.test")]
    roles = member_roles(world.a.tenant)
    assert (roles["newhire@alpha.test"], "drifter@nowhere.test" in roles) == ("admin", False)
    assert reload(invitation).accepted_by == signed_in_user(client)


def test_an_unconfirmed_address_cannot_become_the_accounts_own(client, world):
    drifter = factories.make_user("drifter@nowhere.test", address_proven=False)
    client.force_login(drifter)
    client.post("/accounts/email/", {"action_add": "", "email": "newhire@alpha.test"})

    response = client.post("/accounts/email/", {"action_primary": "", "email": "newhire@alpha.test"}, follow=True)

    assert "Your primary email address must be verified." in response.content.decode()
    assert User.objects.get(pk=drifter.pk).email == "drifter@nowhere.test"
    assert EmailAddress.objects.get(user=drifter, email="newhire@alpha.test").primary is False


def test_an_account_whose_own_address_nobody_confirmed_is_neither_linked_nor_given_the_invitation(
    client, world, idp, alpha_sso
):
    # e.g. an address made primary before the email page required a confirmation
    squatter = factories.make_user("newhire@alpha.test", address_proven=False)
    invitation = factories.make_invitation(world.a.tenant, "newhire@alpha.test", role="admin", invited_by=world.a.owner)
    idp.user = {"sub": "okta|newhire", "email": "newhire@alpha.test", "email_verified": True}

    response = sign_in_via_sso(client, idp, "newhire@alpha.test")

    assert response.status_code == 403
    assert "never confirmed that address" in error_text(response)
    assert signed_in_user(client) is None
    assert social_accounts(PROVIDER_ID) == []
    assert squatter.email not in member_roles(world.a.tenant)
    assert reload(invitation).status == InvitationStatus.PENDING


def test_a_member_who_joined_by_invitation_with_a_password_is_linked_on_first_sso_sign_in(
    client, world, idp, alpha_sso
):
    invitation = factories.make_invitation(world.a.tenant, "joiner@alpha.test", role="admin", invited_by=world.a.owner)
    account = {"full_name": "Jo Iner", "password1": factories.PASSWORD, "password2": factories.PASSWORD}
    client.post(f"/invitations/{invitation.token}/", account)
    joiner = signed_in_user(client)
    client.post("/accounts/logout/")
    idp.user = {"sub": "okta|joiner", "email": "joiner@alpha.test", "email_verified": True}

    response = sign_in_via_sso(client, idp, "joiner@alpha.test")

    assert response.status_code == 302
    assert signed_in_user(client) == joiner
    assert social_accounts(PROVIDER_ID) == [("okta|joiner", "joiner@alpha.test")]
    assert member_roles(world.a.tenant)["joiner@alpha.test"] == "admin"


def test_a_tenant_idp_account_is_never_created_through_allauths_sign_up_form(rf, world, alpha_sso):
    request = rf.post("/accounts/3rdparty/signup/")
    sociallogin = SimpleNamespace(account=SimpleNamespace(provider=PROVIDER_ID))

    with pytest.raises(ImmediateHttpResponse) as exc:
        SocialAccountAdapter(request).save_user(request, sociallogin, form=object())

    assert exc.value.response.status_code == 403


def test_an_operator_account_cannot_sign_in_through_a_tenant_idp(client, world, idp, alpha_sso):
    factories.make_user("ops@alpha.test", is_staff=True)
    idp.user = {"sub": "okta|ops", "email": "ops@alpha.test", "email_verified": True}

    response = sign_in_via_sso(client, idp, "ops@alpha.test")

    assert response.status_code == 403
    assert signed_in_user(client) is None
    assert social_accounts(PROVIDER_ID) == []


@pytest.mark.parametrize("lax_idp", [False, True], ids=["strict-idp", "lax-idp"])
def test_the_code_cannot_be_redeemed_through_allauths_unchecked_callback(client, world, idp, alpha_sso, lax_idp):
    # allauth's own callback would skip the nonce and the ID token's signature. A strict
    # IdP refuses it anyway (the SocialApp holds no secret, the redirect URI differs);
    # behind a lax one the adapter refuses a sign-in that did not pass our checks.
    idp.lax = lax_idp
    authorize_url = start_sign_in(client, "newcomer@alpha.test")

    response = finish_sign_in(client, idp, authorize_url, callback_path=f"/accounts/oidc/{PROVIDER_ID}/login/callback/")

    assert response.status_code in (401, 403)
    assert signed_in_user(client) is None
    assert not User.objects.filter(email="newcomer@alpha.test").exists()


def test_the_query_string_cannot_change_the_authorization_request(client, world, idp, alpha_sso):
    response = client.post(
        f"/accounts/oidc/{PROVIDER_ID}/login/?auth_params=redirect_uri%3Dhttps%3A%2F%2Fevil.example%26nonce%3Dx"
        "&scope=offline_access&process=connect"
    )

    sent = query_of(response["Location"])
    assert sent["redirect_uri"] == f"http://testserver/accounts/sso/{PROVIDER_ID}/callback/"
    assert sent["nonce"] != "x"
    assert "offline_access" not in sent["scope"]
    assert finish_sign_in(client, idp, response["Location"]).status_code == 302


def test_a_tenant_that_loses_the_feature_can_no_longer_sign_in(client, world, idp, alpha_sso):
    authorize_url = start_sign_in(client, "newcomer@alpha.test")
    world.a.tenant.feature_revocations = ["sso"]
    world.a.tenant.save(update_fields=["feature_revocations"])

    assert finish_sign_in(client, idp, authorize_url).status_code == 403
    assert client.post("/accounts/sso/", {"email": "newcomer@alpha.test"}).status_code == 400
    assert not User.objects.filter(email="newcomer@alpha.test").exists()


def test_a_switched_off_connection_signs_nobody_in(client, world, idp, alpha_sso):
    authorize_url = start_sign_in(client, "newcomer@alpha.test")
    configure_sso(world.a, idp, enabled=False)

    response = finish_sign_in(client, idp, authorize_url)

    assert response.status_code == 403
    assert "switched off" in error_text(response)
    assert not SocialApp.objects.filter(provider_id=PROVIDER_ID).exists()
    assert not User.objects.filter(email="newcomer@alpha.test").exists()


def test_an_unreachable_idp_is_an_error_page_not_a_crash(client, world, idp, alpha_sso):
    idp.stop()

    response = client.post("/accounts/sso/", {"email": "newcomer@alpha.test"})

    assert response.status_code == 401
    assert "did not work" in error_text(response)


def test_a_callback_without_a_known_state_signs_nobody_in(client, world, idp, alpha_sso):
    response = client.get(f"/accounts/sso/{PROVIDER_ID}/callback/", {"code": "stolen", "state": "forged"})

    assert response.status_code == 401
    assert signed_in_user(client) is None


def test_a_callback_for_an_unknown_provider_is_404(client, world):
    assert client.get("/accounts/sso/tenant-nobody/callback/", {"code": "x", "state": "y"}).status_code == 404
    assert client.get("/accounts/sso/google/callback/").status_code == 404


# --- the "Continue with single sign-on" step ---------------------------------------------


def test_the_sign_in_page_offers_single_sign_on(client, world):
    body = client.get("/accounts/login/").content.decode()

    assert 'formaction="/accounts/sso/"' in body
    assert "Continue with single sign-on" in body


def test_the_sso_step_prefills_the_email(client, world):
    response = client.get("/accounts/sso/", {"email": "someone@alpha.test"})

    assert response.status_code == 200
    assert 'value="someone@alpha.test"' in response.content.decode()


def test_the_sso_step_says_when_a_domain_has_no_single_sign_on(client, world, idp, alpha_sso):
    response = client.post("/accounts/sso/", {"email": "owner@bravo.test"})

    assert response.status_code == 400
    assert "No organisation signs in with single sign-on for bravo.test addresses" in error_text(response)
    assert idp.authorize_requests == []


@pytest.mark.parametrize(
    "body",
    [b"", b"email=", b"email=not-an-email", b"email=x%00%40alpha.test", b"\xff\xfe", b"email=" + b"a" * 10_000],
)
def test_the_sso_step_never_fails_on_bad_input(client, world, alpha_sso, body):
    response = client.generic("POST", "/accounts/sso/", body, "application/x-www-form-urlencoded")

    assert response.status_code == 400


# --- password sign-in and enforcement ----------------------------------------------------


def password_login(client, email: str):
    return client.post("/accounts/login/", {"login": email, "password": factories.PASSWORD})


@pytest.fixture
def enforced(client, world, idp, alpha_sso):
    """A's owner signs in through the IdP once, then makes SSO mandatory for alpha.test."""
    idp.user = {"sub": "okta|owner", "email": "owner@alpha.test", "email_verified": True}
    sign_in_via_sso(client, idp, "owner@alpha.test")
    client.post("/accounts/logout/")
    return configure_sso(world.a, idp, enforced=True)


def test_password_sign_in_still_works_while_sso_is_optional(client, world, alpha_sso):
    assert password_login(client, "member@alpha.test").status_code == 302
    assert signed_in_user(client) == world.a.member


def test_enforced_sso_refuses_password_sign_in_for_the_domain_with_a_clear_message(client, world, enforced):
    response = password_login(client, "member@alpha.test")

    assert response.status_code == 200
    assert signed_in_user(client) is None
    assert "Addresses at alpha.test sign in through your organisation's single sign-on" in error_text(response)


def test_enforced_sso_refuses_a_wrong_password_with_the_same_message(client, world, enforced):
    response = client.post("/accounts/login/", {"login": "member@alpha.test", "password": "wrong"})

    assert "sign in through your organisation" in error_text(response)


def test_enforced_sso_leaves_other_domains_alone(client, world, enforced):
    assert password_login(client, "owner@bravo.test").status_code == 302
    assert signed_in_user(client) == world.b.owner


def test_enforced_sso_still_lets_the_person_in_through_the_idp(client, world, idp, enforced):
    idp.user = {"sub": "okta|member", "email": "member@alpha.test", "email_verified": True}

    assert sign_in_via_sso(client, idp, "member@alpha.test").status_code == 302
    assert signed_in_user(client) == world.a.member


def test_enforcement_lapses_when_sso_is_switched_off(client, world, idp, enforced):
    configure_sso(world.a, idp, enforced=True, enabled=False)

    assert password_login(client, "member@alpha.test").status_code == 302


def test_enforcement_never_locks_out_an_operator(client, world, enforced):
    operator = factories.make_user("ops@alpha.test", is_staff=True)

    assert password_login(client, "ops@alpha.test").status_code == 302
    assert signed_in_user(client) == operator


@pytest.fixture
def consultant(client, world, alpha_sso):
    """consultant@alpha.test: an owner of B (no SSO) who accepted A's invitation signed in."""
    person = factories.make_user("consultant@alpha.test")
    factories.add_member(world.b.tenant, person, "owner")
    invitation = factories.make_invitation(world.a.tenant, person.email, invited_by=world.a.admin)
    client.force_login(person)
    client.post(f"/invitations/{invitation.token}/")
    client.post("/accounts/logout/")
    assert member_roles(world.a.tenant)[person.email] == "member"
    return person


def home_of(side) -> str:
    return f"/t/{side.tenant.slug}/"


def test_enforced_sso_lets_an_account_of_another_organisation_sign_in_there_with_its_password(
    client, world, consultant, enforced
):
    assert password_login(client, consultant.email).status_code == 302
    assert signed_in_user(client) == consultant

    assert client.get(home_of(world.b)).status_code == 200


def test_a_password_session_does_not_open_the_tenant_that_requires_sso(client, world, consultant, enforced):
    password_login(client, consultant.email)

    response = client.get(home_of(world.a) + "members/")

    assert response.status_code == 403
    body = error_text(response)
    assert "Alpha Inc requires single sign-on" in body
    assert 'name="email" value="consultant@alpha.test"' in body
    assert f'name="next" value="{home_of(world.a)}members/"' in body


def test_signing_in_through_the_idp_opens_the_tenant_that_requires_it(client, world, idp, consultant, enforced):
    password_login(client, consultant.email)
    idp.user = {"sub": "okta|consultant", "email": consultant.email, "email_verified": True}

    assert sign_in_via_sso(client, idp, consultant.email).status_code == 302

    assert signed_in_user(client) == consultant
    assert client.get(home_of(world.a)).status_code == 200
    assert client.get(home_of(world.b)).status_code == 200


def test_a_session_from_before_sso_was_required_no_longer_opens_the_tenant(client, world, alpha_sso, idp):
    client.force_login(world.a.member)  # signed in with a password while SSO was optional
    assert client.get(home_of(world.a)).status_code == 200
    owner = Client()
    idp.user = {"sub": "okta|owner", "email": "owner@alpha.test", "email_verified": True}
    sign_in_via_sso(owner, idp, "owner@alpha.test")
    configure_sso(world.a, idp, enforced=True)

    assert client.get(home_of(world.a)).status_code == 403
    assert owner.get(home_of(world.a)).status_code == 200  # signed in through the IdP


def test_requiring_sso_leaves_the_tenants_other_addresses_alone(client, world, enforced):
    outsider = factories.make_user("contractor@bravo.test")
    factories.add_member(world.a.tenant, outsider, "member")

    assert password_login(client, outsider.email).status_code == 302
    assert client.get(home_of(world.a)).status_code == 200


def test_making_sso_mandatory_for_ones_own_domain_needs_one_sso_sign_in_first(world, idp, alpha_sso):
    from tenants.services import ServiceError

    with pytest.raises(ServiceError) as exc:
        configure_sso(world.a, idp, enforced=True)

    assert "Sign in once through single sign-on yourself" in str(exc.value.message_dict["enforced"])
    with tenant_context(world.a.tenant):
        assert SSOConnection.objects.get(tenant=world.a.tenant).enforced is False


def test_a_second_idp_account_with_the_same_email_does_not_duplicate_the_user(client, world, idp, alpha_sso):
    sign_in_via_sso(client, idp, "newcomer@alpha.test")
    client.post("/accounts/logout/")
    idp.user = {**idp.user, "sub": "idp-user-1-reissued"}

    assert sign_in_via_sso(client, idp, "newcomer@alpha.test").status_code == 302
    assert User.objects.filter(email="newcomer@alpha.test").count() == 1
    assert SocialAccount.objects.filter(user__email="newcomer@alpha.test").count() == 2
    assert list(member_roles(world.a.tenant)).count("newcomer@alpha.test") == 1


def test_an_invitation_under_enforced_sso_sends_the_invitee_to_the_idp_not_a_password_form(client, world, enforced):
    invitation = factories.make_invitation(world.a.tenant, "newcomer@alpha.test", invited_by=world.a.owner)

    response = client.get(f"/invitations/{invitation.token}/")

    assert response.status_code == 302
    assert response["Location"].startswith(enforced.issuer)
    assert query_of(response["Location"])["login_hint"] == "newcomer@alpha.test"
    assert not User.objects.filter(email="newcomer@alpha.test").exists()


# --- a new identity provider inherits nothing from the old one -------------------------------


@pytest.fixture
def other_idp():
    """A second IdP, e.g. one that someone in the tenant runs themselves."""
    server = FakeIdP(client_id="other-client", client_secret="other-secret").start()
    yield server
    server.stop()


def point_sso_at(side, idp, *, role: str) -> None:
    with tenant_context(side.tenant):
        sso.save_sso_connection(
            actor(side, role),
            issuer=idp.issuer,
            client_id=idp.client_id,
            client_secret=idp.client_secret,
            domains=[f"{side.tenant.slug}.test"],
        )


def test_an_admin_cannot_point_sso_at_their_own_idp_and_sign_in_as_the_owner(client, world, idp, other_idp, alpha_sso):
    with pytest.raises(PermissionDenied):
        point_sso_at(world.a, other_idp, role="admin")

    assert SSOConnection.objects.get(tenant=world.a.tenant).issuer == idp.issuer
    assert sso.trusted_domains_of(sso.connection_of(world.a.tenant)) == ["alpha.test"]
    # The owner's address still goes to the organisation's IdP, not the admin's.
    assert start_sign_in(client, world.a.owner.email).startswith(idp.issuer + "/")


def test_a_new_issuer_removes_the_account_links_and_trusts_no_domain_yet(client, world, idp, other_idp, alpha_sso):
    idp.user = {"sub": "okta|00u-owner", "email": world.a.owner.email, "email_verified": True}
    sign_in_via_sso(Client(), idp, world.a.owner.email)
    assert social_accounts(PROVIDER_ID) == [("okta|00u-owner", world.a.owner.email)]

    point_sso_at(world.a, other_idp, role="owner")

    assert social_accounts(PROVIDER_ID) == []
    [entry] = audit_entries(world.a.tenant, "sso.updated")
    assert (entry.after["account_links_removed"], entry.after["domains_unverified"]) == (1, ["alpha.test"])
    # The new IdP asserting the old subject, or the owner's address, signs nobody in.
    other_idp.user = {"sub": "okta|00u-owner", "email": "nobody@alpha.test", "email_verified": True}
    assert client.post("/accounts/sso/", {"login": "nobody@alpha.test"}).status_code == 400  # not routed at all
    assert signed_in_user(client) is None


def test_after_a_new_issuer_is_proved_people_are_linked_again_at_their_next_sign_in(
    client, world, idp, other_idp, alpha_sso
):
    idp.user = {"sub": "okta|admin", "email": "admin@alpha.test", "email_verified": True}
    sign_in_via_sso(Client(), idp, "admin@alpha.test")
    point_sso_at(world.a, other_idp, role="owner")
    sso.operator_verify_domain(world.a.tenant, "alpha.test", actor=None)
    other_idp.user = {"sub": "entra|admin", "email": "admin@alpha.test", "email_verified": True}

    sign_in_via_sso(client, other_idp, "admin@alpha.test")

    assert signed_in_user(client) == world.a.admin
    assert social_accounts(PROVIDER_ID) == [("entra|admin", "admin@alpha.test")]
    link = SocialAccount.objects.get(provider=PROVIDER_ID)
    assert link.extra_data[sso.LINK_ISSUER] == other_idp.issuer


def test_a_link_keeps_the_issuer_it_was_made_through(client, world, idp, alpha_sso):
    idp.user = {"sub": "okta|admin", "email": "admin@alpha.test", "email_verified": True}
    sign_in_via_sso(Client(), idp, "admin@alpha.test")
    sign_in_via_sso(client, idp, "admin@alpha.test")

    assert signed_in_user(client) == world.a.admin
    assert SocialAccount.objects.get(provider=PROVIDER_ID).extra_data[sso.LINK_ISSUER] == idp.issuer


def test_a_link_another_issuer_made_signs_nobody_in(client, world, idp, alpha_sso):
    SocialAccount.objects.create(
        user=world.a.owner,
        provider=PROVIDER_ID,
        uid="okta|00u-owner",
        extra_data={sso.LINK_ISSUER: "https://idp.previous.example", "id_token": {"sub": "okta|00u-owner"}},
    )
    idp.user = {"sub": "okta|00u-owner", "email": "nobody@alpha.test", "email_verified": True}

    response = sign_in_via_sso(client, idp, "nobody@alpha.test")

    assert response.status_code == 403
    assert "linked to another identity provider" in error_text(response)
    assert signed_in_user(client) is None
    # Refused before allauth could overwrite what the link remembers.
    link = SocialAccount.objects.get(provider=PROVIDER_ID)
    assert link.extra_data[sso.LINK_ISSUER] == "https://idp.previous.example"


def test_the_audit_log_never_shows_the_idp_subject_of_a_linked_account(client, world, idp, alpha_sso):
    idp.user = {"sub": "okta|00u-owner", "email": world.a.owner.email, "email_verified": True}

    sign_in_via_sso(client, idp, world.a.owner.email)

    [linked] = audit_entries(world.a.tenant, "sso.account_linked")
    assert "okta|00u-owner" not in str(linked.after)
    assert linked.after["subject_fingerprint"] == sso.subject_fingerprint(alpha_sso, "okta|00u-owner")


# --- an account other organisations use is linked only with its holder's consent --------------


def test_an_open_invitation_does_not_let_sso_take_over_another_tenants_owner(client, world, idp, alpha_sso):
    consultant = factories.make_user("consultant@alpha.test")
    factories.add_member(world.b.tenant, consultant, "owner")
    invitation = factories.make_invitation(world.a.tenant, consultant.email, invited_by=world.a.admin)
    idp.user = {"sub": "okta|consultant", "email": consultant.email, "email_verified": True}

    response = sign_in_via_sso(client, idp, consultant.email)

    assert response.status_code == 403
    message = error_text(response)
    assert "belongs to another organisation" in message
    assert "Sign in with your password and accept Alpha Inc's invitation" in message
    assert signed_in_user(client) is None
    assert social_accounts(PROVIDER_ID) == []
    assert consultant.email not in member_roles(world.a.tenant)
    assert reload(invitation).status == InvitationStatus.PENDING


def test_another_tenants_member_who_accepted_the_invitation_signed_in_is_linked(client, world, idp, alpha_sso):
    consultant = factories.make_user("consultant@alpha.test")
    factories.add_member(world.b.tenant, consultant, "owner")
    invitation = factories.make_invitation(world.a.tenant, consultant.email, invited_by=world.a.admin)
    client.force_login(consultant)
    client.post(f"/invitations/{invitation.token}/")
    client.post("/accounts/logout/")
    assert member_roles(world.a.tenant)[consultant.email] == "member"
    idp.user = {"sub": "okta|consultant", "email": consultant.email, "email_verified": True}

    response = sign_in_via_sso(client, idp, consultant.email)

    assert response.status_code == 302
    assert signed_in_user(client) == consultant
    assert social_accounts(PROVIDER_ID) == [("okta|consultant", consultant.email)]


def test_another_tenants_member_added_here_without_their_consent_is_not_linked(client, world, idp, alpha_sso):
    consultant = factories.make_user("consultant@alpha.test")
    factories.add_member(world.b.tenant, consultant, "owner")
    factories.add_member(world.a.tenant, consultant, "member")  # no invitation they accepted
    idp.user = {"sub": "okta|consultant", "email": consultant.email, "email_verified": True}

    response = sign_in_via_sso(client, idp, consultant.email)

    assert response.status_code == 403
    assert signed_in_user(client) is None
    assert social_accounts(PROVIDER_ID) == []


def test_under_enforced_sso_the_refusal_sends_the_holder_of_another_tenants_account_to_support(
    client, world, idp, enforced
):
    consultant = factories.make_user("consultant@alpha.test")
    factories.add_member(world.b.tenant, consultant, "owner")
    factories.make_invitation(world.a.tenant, consultant.email, invited_by=world.a.admin)
    idp.user = {"sub": "okta|consultant", "email": consultant.email, "email_verified": True}

    response = sign_in_via_sso(client, idp, consultant.email)

    assert response.status_code == 403
    assert "Ask support to connect it to Alpha Inc's single sign-on" in error_text(response)
    assert signed_in_user(client) is None

"""Browser sessions: signing out ends one; losing one's last tenant ends all of them."""

from __future__ import annotations

from allauth.usersessions.models import UserSession
from django.contrib.sessions.models import Session
from django.test import Client

from tenants import services
from tenants.context import tenant_context
from tenants.models import Membership, TenantStatus
from tests import factories
from tests.identity.mfa_helpers import sign_in_with_password
from tests.tenants.helpers import IP


def browser_of(user, *, password: bool = True) -> Client:
    """A browser signed in as `user` that has opened a page (so its session is recorded)."""
    browser = Client()
    if password:
        assert sign_in_with_password(browser, user).status_code == 302
    else:
        browser.force_login(user)
    assert is_signed_in(browser)
    return browser


def is_signed_in(browser: Client) -> bool:
    # A page any signed-in person may open, and that sends anyone else to sign in.
    return browser.get("/accounts/2fa/").status_code == 200


def session_key(browser: Client) -> str:
    return browser.cookies["sessionid"].value


def remove(side, user):
    """The tenant's owner removes `user` on the members page."""
    browser = browser_of(side.owner, password=False)
    response = browser.post(f"/t/{side.tenant.slug}/members/{membership_pk(side.tenant, user)}/remove/")
    assert response.status_code == 302


def membership_pk(tenant, user) -> int:
    with tenant_context(tenant):
        return Membership.objects.get(user=user).pk


# --- signing out ---------------------------------------------------------------------------------


def test_it_ends_the_session_at_sign_out(world):
    browser = browser_of(world.a.member)
    key = session_key(browser)
    stolen = Client()
    stolen.cookies["sessionid"] = key

    assert browser.post("/accounts/logout/").status_code == 302

    assert not Session.objects.filter(session_key=key).exists()
    assert not is_signed_in(browser)
    assert not is_signed_in(stolen)  # a copy of the old cookie is worth nothing either
    assert stolen.get("/t/alpha/")["Location"].startswith("/accounts/login/")


def test_it_records_each_signed_in_session_per_user(world):
    password_browser = browser_of(world.a.member)
    invitation_style_browser = browser_of(world.a.member, password=False)  # signed in without allauth's form

    keys = set(UserSession.objects.filter(user=world.a.member).values_list("session_key", flat=True))

    assert keys == {session_key(password_browser), session_key(invitation_style_browser)}


# --- removing a member -----------------------------------------------------------------------------


def test_it_signs_out_everywhere_a_member_removed_from_their_only_tenant(world):
    laptop = browser_of(world.a.member)
    phone = browser_of(world.a.member, password=False)
    keys = {session_key(laptop), session_key(phone)}

    remove(world.a, world.a.member)

    assert not Session.objects.filter(session_key__in=keys).exists()
    assert not UserSession.objects.filter(user=world.a.member).exists()
    assert not is_signed_in(laptop)
    assert not is_signed_in(phone)
    assert laptop.get("/t/alpha/")["Location"].startswith("/accounts/login/")


def test_it_keeps_the_session_of_someone_still_in_another_tenant(world):
    both = world.b.member
    factories.add_member(world.a.tenant, both)
    browser = browser_of(both)
    assert browser.get("/t/alpha/").status_code == 200

    remove(world.a, both)

    assert is_signed_in(browser)
    assert browser.get("/t/bravo/").status_code == 200
    assert browser.get("/t/alpha/").status_code == 404


def test_it_leaves_the_other_members_sessions_alone(world):
    teammate = browser_of(world.a.admin)
    remove(world.a, world.a.member)
    assert is_signed_in(teammate)


def test_it_keeps_an_operators_session(world):
    world.a.member.is_staff = True
    world.a.member.save()
    browser = browser_of(world.a.member)

    remove(world.a, world.a.member)

    assert is_signed_in(browser)
    assert browser.get("/t/alpha/").status_code == 404


# --- suspending a tenant ---------------------------------------------------------------------------


def test_it_keeps_every_member_of_a_suspended_tenant_signed_in_and_shows_them_why(world, operator):
    only_here = browser_of(world.a.member)
    both = world.b.member
    factories.add_member(world.a.tenant, both)
    elsewhere_too = browser_of(both)
    console = browser_of(operator, password=False)

    services.set_tenant_status(operator, world.a.tenant, TenantStatus.SUSPENDED, "Unpaid invoices", IP)

    for browser in (only_here, elsewhere_too):
        assert is_signed_in(browser)
        page = browser.get("/t/alpha/chat/")
        assert page.status_code == 403
        assert page.templates[0].name == "tenants/suspended.html"
        assert "Alpha Inc is suspended" in page.content.decode()
        assert "Unpaid invoices" in page.content.decode()
    assert is_signed_in(console)


def test_it_lets_the_members_of_a_suspended_tenant_continue_after_reactivation(world, operator):
    browser = browser_of(world.a.member)
    services.set_tenant_status(operator, world.a.tenant, TenantStatus.SUSPENDED, "Unpaid invoices", IP)
    assert browser.get("/t/alpha/").status_code == 403

    services.set_tenant_status(operator, world.a.tenant, TenantStatus.ACTIVE, ip=IP)

    assert browser.get("/t/alpha/").status_code == 200


def test_it_keeps_someone_removed_from_one_tenant_signed_in_while_their_other_is_suspended(world, operator):
    # Removed from A while B, their only other tenant, is suspended: they still belong to B.
    both = world.b.member
    factories.add_member(world.a.tenant, both)
    browser = browser_of(both)
    services.set_tenant_status(operator, world.b.tenant, TenantStatus.SUSPENDED, "Unpaid invoices", IP)

    remove(world.a, both)

    assert is_signed_in(browser)
    assert browser.get("/t/bravo/").status_code == 403


def test_it_does_not_sign_anyone_out_at_reactivation(world, operator):
    services.set_tenant_status(operator, world.a.tenant, TenantStatus.SUSPENDED, "Unpaid invoices", IP)
    both = world.b.member
    factories.add_member(world.a.tenant, both)
    browser = browser_of(both)

    services.set_tenant_status(operator, world.a.tenant, TenantStatus.ACTIVE, ip=IP)

    assert is_signed_in(browser)
    assert browser.get("/t/alpha/").status_code == 200

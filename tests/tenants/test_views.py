"""The tenant admin screens, the invitation link, and the operator console, through Django's test client."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.messages import get_messages
from django.test import Client
from django.utils import timezone

from tenants import services
from tenants.context import all_tenants, tenant_context
from tenants.models import InvitationStatus, Tenant, TenantStatus, Tier, User
from tenants.roles import Role
from tests import factories
from tests.tenants.helpers import audit_entries, invitations, member_roles, platform_audit_entries, reload


def members_url(side) -> str:
    return f"/t/{side.tenant.slug}/members/"


def messages_of(response) -> list[str]:
    """The flash messages the request left for the next page (not yet shown)."""
    return [str(m) for m in get_messages(response.wsgi_request)]


def last_message(response) -> str:
    return messages_of(response)[-1]


def signed_in_as(client, user):
    client.force_login(user)
    return client


# --- who may see the members page ---------------------------------------------------


def test_it_shows_the_members_page_to_the_owner(client, world):
    response = signed_in_as(client, world.a.owner).get(members_url(world.a))
    assert response.status_code == 200
    assert b"member@alpha.test" in response.content
    assert b"bravo.test" not in response.content


def test_it_shows_the_members_page_to_an_admin(client, world):
    response = signed_in_as(client, world.a.admin).get(members_url(world.a))
    assert response.status_code == 200


@pytest.mark.parametrize("role", ["member", "billing"])
def test_it_forbids_the_members_page_to_a_teammate_without_the_right(client, world, role):
    response = signed_in_as(client, world.a.user(role)).get(members_url(world.a))
    assert response.status_code == 403


def test_it_answers_404_to_a_member_of_the_other_tenant(client, world):
    response = signed_in_as(client, world.b.owner).get(members_url(world.a))
    assert response.status_code == 404
    assert b"member@alpha.test" not in response.content


def test_it_answers_404_to_an_outsider(client, world):
    response = signed_in_as(client, world.outsider).get(members_url(world.a))
    assert response.status_code == 404


def test_it_answers_404_for_a_tenant_that_does_not_exist(client, world):
    response = signed_in_as(client, world.a.owner).get("/t/no-such-tenant/members/")
    assert response.status_code == 404


@pytest.mark.parametrize("slug", ["alpha", "no-such-tenant"])
def test_it_sends_anonymous_visitors_to_the_login_page_whether_or_not_the_tenant_exists(client, world, slug):
    response = client.get(f"/t/{slug}/members/")
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next=/t/{slug}/members/"


def test_it_shows_a_suspended_tenant_with_the_reason(client, world, operator):
    services.set_tenant_status(operator, world.a.tenant, TenantStatus.SUSPENDED, "Unpaid invoice 2024-07")
    response = signed_in_as(client, world.a.owner).get(f"/t/{world.a.tenant.slug}/")
    assert response.status_code == 403
    assert b"Unpaid invoice 2024-07" in response.content


def test_it_tells_the_owner_of_a_suspended_tenant_that_the_provider_suspended_it(client, world, operator):
    services.set_tenant_status(operator, world.a.tenant, TenantStatus.SUSPENDED, "unpaid invoice")
    page = signed_in_as(client, world.a.owner).get(f"/t/{world.a.tenant.slug}/members/").content.decode()
    assert "Alpha Inc is suspended" in page
    assert "The provider of this portal suspended Alpha Inc. As its owner, contact the provider" in page
    assert "member@alpha.test" not in page  # nothing of the tenant's data


def test_it_gives_the_owner_of_a_suspended_tenant_the_providers_support_address(client, world, operator, settings):
    settings.SUPPORT_EMAIL = "support@provider.example"
    services.set_tenant_status(operator, world.a.tenant, TenantStatus.SUSPENDED, "unpaid invoice")
    factories.add_member(world.b.tenant, world.a.owner)  # two organisations: the home page lists them
    signed_in_as(client, world.a.owner)

    page = client.get(f"/t/{world.a.tenant.slug}/").content.decode()
    home = client.get("/").content.decode()

    link = (
        '<a class="support-email" href="mailto:support@provider.example?subject=Reactivate%20Alpha%20Inc">'
        "support@provider.example</a>"
    )
    assert f"As its owner, contact the provider at {link} to settle the reason above" in page
    assert f"Contact the provider at {link} to have it reactivated." in home


def test_it_keeps_the_wording_without_an_address_when_no_support_email_is_set(client, world, operator, settings):
    settings.SUPPORT_EMAIL = ""
    services.set_tenant_status(operator, world.a.tenant, TenantStatus.SUSPENDED, "unpaid invoice")
    factories.add_member(world.b.tenant, world.a.admin)  # two organisations: the home page lists them
    signed_in_as(client, world.a.admin)

    page = client.get(f"/t/{world.a.tenant.slug}/").content.decode()
    home = client.get("/").content.decode()

    assert "As its admin, contact the provider to settle the reason above and have it reactivated." in page
    assert "Contact the provider to have it reactivated." in home
    assert "mailto:" not in page and "mailto:" not in home


def test_it_does_not_send_a_member_of_a_suspended_tenant_to_the_provider(client, world, operator, settings):
    settings.SUPPORT_EMAIL = "support@provider.example"
    services.set_tenant_status(operator, world.a.tenant, TenantStatus.SUSPENDED, "unpaid invoice")
    signed_in_as(client, world.a.member)

    page = client.get(f"/t/{world.a.tenant.slug}/").content.decode()

    assert "Contact an owner or admin of Alpha Inc" in page
    assert "support@provider.example" not in page


def test_it_tells_a_member_of_a_suspended_tenant_to_ask_an_owner_or_admin(client, world, operator):
    services.set_tenant_status(operator, world.a.tenant, TenantStatus.SUSPENDED, "unpaid invoice")
    page = signed_in_as(client, world.a.member).get(f"/t/{world.a.tenant.slug}/").content.decode()
    assert "Contact an owner or admin of Alpha Inc" in page
    assert "As its" not in page


def test_it_sends_a_member_of_one_suspended_tenant_from_home_to_its_suspended_page(client, world, operator):
    services.set_tenant_status(operator, world.a.tenant, TenantStatus.SUSPENDED, "unpaid invoice")
    response = signed_in_as(client, world.a.owner).get("/", follow=True)
    assert response.redirect_chain == [(f"/t/{world.a.tenant.slug}/", 302)]
    assert response.status_code == 403
    assert "unpaid invoice" in response.content.decode()
    assert "Contact your administrator" not in response.content.decode()


def test_it_keeps_a_suspended_tenant_404_for_a_member_of_the_other_tenant(client, world, operator):
    services.set_tenant_status(operator, world.a.tenant, TenantStatus.SUSPENDED, "Unpaid invoice 2024-07")
    response = signed_in_as(client, world.b.owner).get(f"/t/{world.a.tenant.slug}/")
    assert response.status_code == 404
    assert b"Unpaid invoice" not in response.content


def test_it_shows_the_overview_to_every_member(client, world):
    response = signed_in_as(client, world.a.billing).get(f"/t/{world.a.tenant.slug}/")
    assert response.status_code == 200


def test_it_shows_the_audit_log_to_an_admin_but_not_to_a_member(client, world):
    assert signed_in_as(client, world.a.admin).get(f"/t/{world.a.tenant.slug}/audit/").status_code == 200
    assert signed_in_as(client, world.a.member).get(f"/t/{world.a.tenant.slug}/audit/").status_code == 403


def test_it_shows_only_the_tenants_own_entries_in_its_audit_log(client, world):
    bravo = Client()
    bravo.force_login(world.b.owner)
    bravo.post(members_url(world.b) + "invite/", {"email": "bravo-secret@example.test", "role": "member"})
    client.force_login(world.a.owner)
    client.post(members_url(world.a) + "invite/", {"email": "alpha-invitee@example.test", "role": "member"})
    response = client.get(f"/t/{world.a.tenant.slug}/audit/")
    assert response.status_code == 200
    assert b"alpha-invitee@example.test" in response.content
    assert b"bravo-secret" not in response.content


# --- inviting, changing roles, removing ---------------------------------------------


def test_it_shows_a_posted_invitation_among_the_pending_invitations(client, world):
    client.force_login(world.a.admin)
    response = client.post(members_url(world.a) + "invite/", {"email": "New.Hire@Example.test", "role": "billing"})
    assert response.status_code == 302
    assert response["Location"] == members_url(world.a)
    assert messages_of(response) == ["Invitation sent to new.hire@example.test."]
    [invitation] = invitations(world.a.tenant)
    assert (invitation.email, invitation.role, invitation.invited_by) == (
        "new.hire@example.test",
        "billing",
        world.a.admin,
    )
    page = client.get(members_url(world.a))
    assert b"new.hire@example.test" in page.content
    assert invitations(world.b.tenant) == []


def test_it_answers_400_with_the_form_error_to_an_invalid_email_and_creates_nothing(client, world):
    client.force_login(world.a.owner)
    response = client.post(members_url(world.a) + "invite/", {"email": "not-an-email", "role": "member"})
    assert response.status_code == 400
    assert response.context["invite_form"].errors["email"] == ["Enter a valid email address."]
    assert b"Enter a valid email address." in response.content
    assert invitations(world.a.tenant) == []


def test_it_answers_400_with_the_reason_to_inviting_an_existing_member(client, world):
    client.force_login(world.a.owner)
    response = client.post(members_url(world.a) + "invite/", {"email": "member@alpha.test", "role": "member"})
    assert response.status_code == 400
    assert "already a member" in " ".join(response.context["invite_form"].errors["email"])
    assert invitations(world.a.tenant) == []


def test_it_refuses_the_owner_role_in_an_admins_invitation(client, world):
    client.force_login(world.a.admin)
    response = client.post(members_url(world.a) + "invite/", {"email": "boss@example.test", "role": "owner"})
    assert response.status_code == 400
    assert "role" in response.context["invite_form"].errors
    assert invitations(world.a.tenant) == []


def test_it_forbids_a_member_to_invite(client, world):
    client.force_login(world.a.member)
    response = client.post(members_url(world.a) + "invite/", {"email": "friend@example.test", "role": "member"})
    assert response.status_code == 403
    assert invitations(world.a.tenant) == []


def test_it_refuses_get_on_the_invite_page(client, world):
    response = signed_in_as(client, world.a.owner).get(members_url(world.a) + "invite/")
    assert response.status_code == 405


def test_it_lets_an_owner_change_a_role(client, world):
    client.force_login(world.a.owner)
    membership = world.a.memberships["member"]
    response = client.post(f"{members_url(world.a)}{membership.pk}/role/", {"role": "admin"})
    assert response.status_code == 302
    assert messages_of(response) == ["member@alpha.test is now Admin."]
    assert member_roles(world.a.tenant)["member@alpha.test"] == "admin"
    assert len(audit_entries(world.a.tenant, "membership.role_changed")) == 1


def test_it_refuses_an_unknown_role_with_a_message(client, world):
    client.force_login(world.a.owner)
    membership = world.a.memberships["member"]
    response = client.post(f"{members_url(world.a)}{membership.pk}/role/", {"role": "emperor"})
    assert response.status_code == 302
    assert messages_of(response) == ["Choose one of the roles offered."]
    assert member_roles(world.a.tenant)["member@alpha.test"] == "member"


def test_it_forbids_an_admin_to_change_an_owners_role(client, world):
    client.force_login(world.a.admin)
    membership = world.a.memberships["owner"]
    response = client.post(f"{members_url(world.a)}{membership.pk}/role/", {"role": "member"})
    assert response.status_code == 403
    assert member_roles(world.a.tenant)["owner@alpha.test"] == "owner"


def test_it_finds_no_membership_of_the_other_tenant(client, world):
    client.force_login(world.a.owner)
    foreign = world.b.memberships["member"]
    role = client.post(f"{members_url(world.a)}{foreign.pk}/role/", {"role": "admin"})
    remove = client.post(f"{members_url(world.a)}{foreign.pk}/remove/")
    assert (role.status_code, remove.status_code) == (404, 404)
    assert member_roles(world.b.tenant)["member@bravo.test"] == "member"


def test_it_lets_an_owner_remove_a_member(client, world):
    client.force_login(world.a.owner)
    membership = world.a.memberships["billing"]
    response = client.post(f"{members_url(world.a)}{membership.pk}/remove/")
    assert response.status_code == 302
    assert messages_of(response) == ["billing@alpha.test was removed."]
    assert "billing@alpha.test" not in member_roles(world.a.tenant)
    assert "billing@bravo.test" in member_roles(world.b.tenant)


def test_it_shows_the_error_and_keeps_the_owner_when_removing_the_last_owner(client, world):
    client.force_login(world.a.owner)
    membership = world.a.memberships["owner"]
    response = client.post(f"{members_url(world.a)}{membership.pk}/remove/", follow=True)
    assert response.status_code == 200
    assert response.redirect_chain == [(members_url(world.a), 302)]
    assert b"The last owner cannot be removed." in response.content
    assert member_roles(world.a.tenant)["owner@alpha.test"] == "owner"


def test_it_takes_access_away_from_a_removed_member_at_once(client, world):
    client.force_login(world.a.owner)
    client.post(f"{members_url(world.a)}{world.a.memberships['admin'].pk}/remove/")
    client.force_login(world.a.admin)
    assert client.get(members_url(world.a)).status_code == 404


def test_it_lets_an_admin_resend_and_revoke_an_invitation(client, world):
    invitation = factories.make_invitation(world.a.tenant, "pending@example.test")
    client.force_login(world.a.admin)
    resent = client.post(f"/t/{world.a.tenant.slug}/invitations/{invitation.pk}/resend/")
    assert messages_of(resent) == ["Invitation to pending@example.test sent again."]
    assert reload(invitation).sent_count == 1
    revoked = client.post(f"/t/{world.a.tenant.slug}/invitations/{invitation.pk}/revoke/")
    assert last_message(revoked) == "Invitation to pending@example.test revoked."
    assert reload(invitation).status == InvitationStatus.REVOKED


def test_it_finds_no_invitation_of_the_other_tenant(client, world):
    foreign = factories.make_invitation(world.b.tenant, "bravo-invitee@example.test")
    client.force_login(world.a.owner)
    response = client.post(f"/t/{world.a.tenant.slug}/invitations/{foreign.pk}/revoke/")
    assert response.status_code == 404
    assert reload(foreign).status == InvitationStatus.PENDING


# --- the invitation link ------------------------------------------------------------


def invitation_url(invitation) -> str:
    return f"/invitations/{invitation.token}/"


NEW_ACCOUNT = {"full_name": "Nora New", "password1": factories.PASSWORD, "password2": factories.PASSWORD}


def test_it_shows_a_new_person_the_create_account_form(client, world):
    invitation = factories.make_invitation(world.a.tenant, "nora@example.test", role=Role.ADMIN)
    response = client.get(invitation_url(invitation))
    assert response.status_code == 200
    assert response.context["form"] is not None
    assert b"nora@example.test" in response.content
    assert b"Alpha Inc" in response.content


def test_it_lets_a_new_person_create_an_account_and_join_the_tenant(client, world):
    invitation = factories.make_invitation(world.a.tenant, "nora@example.test", role=Role.ADMIN)
    response = client.post(invitation_url(invitation), NEW_ACCOUNT)
    assert response.status_code == 302
    assert response["Location"] == f"/t/{world.a.tenant.slug}/"
    user = User.objects.get(email="nora@example.test")
    assert user.full_name == "Nora New"
    assert int(client.session["_auth_user_id"]) == user.pk
    assert member_roles(world.a.tenant)["nora@example.test"] == "admin"
    assert "nora@example.test" not in member_roles(world.b.tenant)
    assert reload(invitation).status == InvitationStatus.ACCEPTED
    assert client.get(f"/t/{world.a.tenant.slug}/").status_code == 200


def test_it_answers_400_to_mismatched_passwords_and_creates_no_account(client, world):
    invitation = factories.make_invitation(world.a.tenant, "nora@example.test")
    response = client.post(invitation_url(invitation), {**NEW_ACCOUNT, "password2": "something-else-entirely"})
    assert response.status_code == 400
    assert "password2" in response.context["form"].errors
    assert not User.objects.filter(email="nora@example.test").exists()
    assert reload(invitation).status == InvitationStatus.PENDING


def test_it_sends_a_person_with_an_account_to_sign_in_first(client, world):
    invitation = factories.make_invitation(world.a.tenant, "outsider@nowhere.test")
    response = client.post(invitation_url(invitation), NEW_ACCOUNT)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={invitation_url(invitation)}"
    assert "outsider@nowhere.test" not in member_roles(world.a.tenant)
    assert reload(invitation).status == InvitationStatus.PENDING


def test_it_tells_a_person_with_an_account_to_sign_in_on_the_link_page(client, world):
    invitation = factories.make_invitation(world.a.tenant, "outsider@nowhere.test")
    response = client.get(invitation_url(invitation))
    assert response.status_code == 200
    assert response.context["has_account"] is True
    assert response.context["form"] is None


def test_it_lets_a_signed_in_person_accept_with_one_click(client, world):
    invitation = factories.make_invitation(world.a.tenant, "outsider@nowhere.test", role=Role.BILLING)
    client.force_login(world.outsider)
    response = client.post(invitation_url(invitation))
    assert response.status_code == 302
    assert response["Location"] == f"/t/{world.a.tenant.slug}/"
    assert member_roles(world.a.tenant)["outsider@nowhere.test"] == "billing"


def test_it_refuses_the_invitation_to_someone_else_signed_in(client, world):
    invitation = factories.make_invitation(world.a.tenant, "nora@example.test")
    client.force_login(world.outsider)
    page = client.get(invitation_url(invitation))
    assert page.context["wrong_user"] is True
    response = client.post(invitation_url(invitation))
    assert response.status_code == 400
    assert "outsider@nowhere.test" not in member_roles(world.a.tenant)
    assert reload(invitation).status == InvitationStatus.PENDING


def test_it_answers_410_to_an_already_used_link(client, world):
    invitation = factories.make_invitation(world.a.tenant, "outsider@nowhere.test")
    services.accept_invitation(invitation, world.outsider)
    response = client.get(invitation_url(invitation))
    assert response.status_code == 410
    assert client.post(invitation_url(invitation), NEW_ACCOUNT).status_code == 410


def test_it_answers_410_to_an_expired_link(client, world):
    invitation = factories.make_invitation(
        world.a.tenant, "nora@example.test", expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert client.get(invitation_url(invitation)).status_code == 410
    assert client.post(invitation_url(invitation), NEW_ACCOUNT).status_code == 410
    assert not User.objects.filter(email="nora@example.test").exists()


@pytest.mark.parametrize("token", ["garbage", "1.deadbeef", "0.x", "99999999999999999999.abc", "².abc", "1.%00"])
def test_it_answers_404_to_a_garbage_token(client, world, token):
    response = client.get(f"/invitations/{token}/")
    assert response.status_code == 404


def test_it_answers_404_to_the_old_link_of_a_resent_invitation(client, world):
    invitation = factories.make_invitation(world.a.tenant, "nora@example.test")
    old_url = invitation_url(invitation)
    client.force_login(world.a.owner)
    client.post(f"/t/{world.a.tenant.slug}/invitations/{invitation.pk}/resend/")
    client.logout()
    assert client.get(old_url).status_code == 404
    assert client.get(invitation_url(reload(invitation))).status_code == 200


# --- the operator console -----------------------------------------------------------


OPERATOR_PAGES = [
    "/operator/",
    "/operator/tenants/new/",
    "/operator/tenants/alpha/",
    "/operator/tiers/",
    "/operator/audit/",
]


@pytest.mark.parametrize("path", OPERATOR_PAGES)
def test_it_answers_404_to_non_staff_in_the_console(client, world, path):
    response = signed_in_as(client, world.a.owner).get(path)
    assert response.status_code == 404


@pytest.mark.parametrize("path", OPERATOR_PAGES)
def test_it_sends_anonymous_visitors_of_the_console_to_sign_in(client, world, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


@pytest.mark.parametrize("path", OPERATOR_PAGES)
def test_it_answers_200_to_staff_in_the_console(client, world, operator, path):
    response = signed_in_as(client, operator).get(path)
    assert response.status_code == 200


def test_it_lists_both_tenants_with_their_member_counts(client, world, operator):
    response = signed_in_as(client, operator).get("/operator/")
    table = {row["tenant"].slug: row["members"] for row in response.context["table"]}
    assert table == {"alpha": 4, "bravo": 4}


def test_it_searches_the_tenants_list_by_name(client, world, operator):
    response = signed_in_as(client, operator).get("/operator/", {"q": "brav"})
    assert [row["tenant"].slug for row in response.context["table"]] == ["bravo"]


def test_it_pages_the_tenants_list_fifty_at_a_time_keeping_the_filters(client, world, operator):
    tier = world.a.tenant.tier
    Tenant.objects.bulk_create(
        [Tenant(name=f"Zeta {n:03d}", slug=f"zeta-{n:03d}", tier=tier, region="eu-west-1") for n in range(60)]
    )
    signed_in_as(client, operator)
    first = client.get("/operator/", {"q": "zeta"})
    assert [row["tenant"].slug for row in first.context["table"]][:2] == ["zeta-000", "zeta-001"]
    assert len(first.context["table"]) == 50
    page = first.content.decode()
    assert "Page 1 of 2 · 60 entries" in page
    assert 'href="?q=zeta&amp;page=2"' in page and "Next →" in page
    second = client.get("/operator/", {"q": "zeta", "page": "2"})
    assert [row["tenant"].slug for row in second.context["table"]] == [f"zeta-{n:03d}" for n in range(50, 60)]
    # A page past the end shows the last; a junk one the first: never an error.
    assert client.get("/operator/", {"q": "zeta", "page": "99"}).context["page"].number == 2
    assert client.get("/operator/", {"q": "zeta", "page": "x"}).context["page"].number == 1


def test_it_filters_the_tenants_list_by_tier_and_deployment(client, world, operator):
    Tenant.objects.filter(pk=world.b.tenant.pk).update(deployment_model="silo")
    signed_in_as(client, operator)
    silo = client.get("/operator/", {"deployment": "silo"})
    assert [row["tenant"].slug for row in silo.context["table"]] == ["bravo"]
    tier = world.a.tenant.tier
    on_tier = client.get("/operator/", {"tier": tier.slug})
    assert {row["tenant"].slug for row in on_tier.context["table"]} == {
        t.slug for t in Tenant.objects.filter(tier=tier)
    }
    for params, said in (
        ({"tier": "gold-plated"}, "Unknown tier “gold-plated”; use one of: "),
        ({"deployment": "cloud"}, "Unknown deployment “cloud”; use one of: pool, bridge, silo."),
    ):
        refused = client.get("/operator/", params)
        assert refused.status_code == 400
        assert said in refused.content.decode()


def tenant_form(**overrides) -> dict:
    tier = Tier.objects.get(slug="standard-test")
    data = {
        "name": "Charlie Ltd",
        "slug": "charlie",
        "tier": str(tier.pk),
        "deployment_model": "pool",
        "region": "eu-west-1",
        "owner_email": "boss@charlie.test",
    }
    data.update(overrides)
    return data


def test_it_lets_an_operator_create_a_tenant(client, world, operator):
    client.force_login(operator)
    response = client.post("/operator/tenants/new/", tenant_form())
    assert response.status_code == 302
    assert response["Location"] == "/operator/tenants/charlie/"
    tenant = Tenant.objects.get(slug="charlie")
    assert (tenant.name, tenant.region) == ("Charlie Ltd", "eu-west-1")
    [created] = audit_entries(tenant, "tenant.created")
    assert created.actor == operator
    assert created.ip_address == "127.0.0.1"
    page = client.get("/operator/tenants/charlie/").content.decode()  # its log names the tier
    assert '<span class="json-key">tier</span>: Standard-Test</span>' in page
    [invitation] = invitations(tenant)
    assert (invitation.email, invitation.role) == ("boss@charlie.test", "owner")


def test_it_answers_400_with_the_error_to_a_duplicate_slug(client, world, operator):
    client.force_login(operator)
    response = client.post("/operator/tenants/new/", tenant_form(slug="alpha"))
    assert response.status_code == 400
    assert response.context["form"].errors["slug"] == ["A tenant with this slug exists."]
    assert b"A tenant with this slug exists." in response.content
    assert Tenant.objects.filter(slug="alpha").count() == 1
    assert platform_audit_entries("tenant.created") == []


@pytest.mark.parametrize("name", ["Alpha Inc", "alpha inc", "  ALPHA INC  "])
def test_it_answers_400_with_the_error_to_a_duplicate_name_whatever_the_case(client, world, operator, name):
    client.force_login(operator)
    response = client.post("/operator/tenants/new/", tenant_form(name=name))
    assert response.status_code == 400
    assert response.context["form"].errors["name"] == ["A tenant called Alpha Inc exists (alpha)."]
    assert not Tenant.objects.filter(slug="charlie").exists()
    assert platform_audit_entries("tenant.created") == []


def test_it_refuses_renaming_a_tenant_as_another_and_keeps_its_name(client, world, operator):
    client.force_login(operator)
    data = {"name": "BRAVO inc", "tier": world.a.tenant.tier_id, "deployment_model": "pool", "region": "us-east-1"}
    response = client.post("/operator/tenants/alpha/", data)
    assert response.status_code == 400
    assert response.context["form"].errors["name"] == ["A tenant called Bravo Inc exists (bravo)."]
    assert Tenant.objects.get(slug="alpha").name == "Alpha Inc"


def test_the_service_refuses_a_duplicate_tenant_name_too(world, operator):
    with pytest.raises(services.ServiceError, match="A tenant called Alpha Inc exists"):
        services.create_tenant(operator, slug="charlie", name="ALPHA INC", tier=world.a.tenant.tier)
    assert not Tenant.objects.filter(slug="charlie").exists()


def test_it_answers_400_to_a_malformed_slug(client, world, operator):
    client.force_login(operator)
    response = client.post("/operator/tenants/new/", tenant_form(slug="Charlie Ltd!"))
    assert response.status_code == 400
    assert "slug" in response.context["form"].errors
    assert not Tenant.objects.exclude(slug__in=["alpha", "bravo"]).exists()


def test_it_lets_an_operator_change_a_tenants_tier(client, world, operator):
    premium = factories.make_tier("premium")
    client.force_login(operator)
    data = {"name": "Alpha Inc", "tier": str(premium.pk), "deployment_model": "pool", "region": "us-east-1"}
    response = client.post("/operator/tenants/alpha/", data)
    assert response.status_code == 302
    assert Tenant.objects.get(slug="alpha").tier == premium
    assert Tenant.objects.get(slug="bravo").tier.slug == "standard-test"
    assert len(audit_entries(world.a.tenant, "tenant.tier_changed")) == 1


# --- the operator and a new tenant's owner invitation ---------------------------------


@pytest.fixture
def onboarded(client, world, operator):
    """Charlie, onboarded with a mistyped owner address; the operator signed in."""
    client.force_login(operator)
    assert client.post("/operator/tenants/new/", tenant_form(owner_email="bos@charlie.test")).status_code == 302
    tenant = Tenant.objects.get(slug="charlie")
    [invitation] = invitations(tenant)
    return tenant, invitation


def test_it_offers_the_operator_resend_revoke_and_another_owner_invitation(client, onboarded):
    tenant, invitation = onboarded
    page = client.get("/operator/tenants/charlie/").content.decode()
    assert f'action="/operator/tenants/charlie/invitations/{invitation.pk}/resend/"' in page
    assert f'action="/operator/tenants/charlie/invitations/{invitation.pk}/revoke/"' in page
    assert 'action="/operator/tenants/charlie/invitations/owner/"' in page
    assert "has no owner yet" in page


def test_it_lets_the_operator_resend_an_owner_invitation_with_a_new_link(
    client, onboarded, operator, settings, mailoutbox, django_capture_on_commit_callbacks
):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    tenant, invitation = onboarded
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/operator/tenants/charlie/invitations/{invitation.pk}/resend/")
    assert response.status_code == 302
    assert response["Location"] == "/operator/tenants/charlie/#inv-title"
    assert last_message(response) == "A new invitation link went to bos@charlie.test; the old one stopped working."
    resent = reload(invitation)
    assert resent.sent_count == 1
    assert resent.secret_hash != invitation.secret_hash
    [message] = mailoutbox
    assert message.to == ["bos@charlie.test"]
    [entry] = audit_entries(tenant, "invitation.resent")
    assert (entry.actor, entry.ip_address) == (operator, "127.0.0.1")


def test_it_lets_the_operator_revoke_a_mistyped_owner_invitation_and_invite_another(client, onboarded, operator):
    tenant, invitation = onboarded
    revoked = client.post(f"/operator/tenants/charlie/invitations/{invitation.pk}/revoke/")
    assert last_message(revoked) == "The invitation to bos@charlie.test is revoked; its link no longer works."
    assert reload(invitation).status == InvitationStatus.REVOKED
    [entry] = audit_entries(tenant, "invitation.revoked")
    assert entry.actor == operator

    invited = client.post("/operator/tenants/charlie/invitations/owner/", {"email": "Boss@Charlie.test"})
    assert invited.status_code == 302
    assert last_message(invited) == "An owner invitation went to boss@charlie.test."
    fresh = [i for i in invitations(tenant) if i.status == InvitationStatus.PENDING]
    assert [(i.email, i.role, i.invited_by) for i in fresh] == [("boss@charlie.test", "owner", operator)]
    assert [e.after for e in audit_entries(tenant, "invitation.created")][-1] == {
        "email": "boss@charlie.test",
        "role": "owner",
    }


def test_it_says_so_when_the_operator_revokes_an_invitation_twice(client, onboarded):
    _, invitation = onboarded
    client.post(f"/operator/tenants/charlie/invitations/{invitation.pk}/revoke/")
    again = client.post(f"/operator/tenants/charlie/invitations/{invitation.pk}/revoke/")
    assert last_message(again) == "This invitation is no longer pending."
    resend = client.post(f"/operator/tenants/charlie/invitations/{invitation.pk}/resend/")
    assert last_message(resend) == "Only pending invitations can be resent."


def test_it_answers_400_with_the_error_to_a_bad_or_duplicate_owner_address(client, onboarded):
    bad = client.post("/operator/tenants/charlie/invitations/owner/", {"email": "not an address"})
    assert bad.status_code == 400
    assert "email" in bad.context["owner_form"].errors
    duplicate = client.post("/operator/tenants/charlie/invitations/owner/", {"email": "bos@charlie.test"})
    assert duplicate.status_code == 400
    assert "already has a pending invitation" in duplicate.context["owner_form"].errors["email"][0]


def test_it_refuses_an_operator_owner_invitation_once_the_tenant_has_an_owner(client, world, operator):
    client.force_login(operator)
    page = client.get("/operator/tenants/alpha/").content.decode()
    assert "invitations/owner/" not in page
    response = client.post("/operator/tenants/alpha/invitations/owner/", {"email": "second@alpha.test"})
    assert response.status_code == 400
    assert response.context["owner_form"].errors["email"] == ["Alpha Inc has an owner: its owners invite people now."]
    assert [i.email for i in invitations(world.a.tenant)] == []


def test_it_finds_no_invitation_of_another_tenant_under_the_operators_tenant_url(client, world, onboarded):
    owner = services.Actor(user=world.a.owner, membership=world.a.memberships["owner"])
    with tenant_context(world.a.tenant):
        alphas = services.invite_member(owner, email="new@alpha.test", role=Role.MEMBER)
    response = client.post(f"/operator/tenants/charlie/invitations/{alphas.pk}/revoke/")
    assert last_message(response) == "No such invitation."
    assert reload(alphas).status == InvitationStatus.PENDING
    assert audit_entries(world.a.tenant, "invitation.revoked") == []


def test_it_keeps_the_operator_invitation_actions_to_operators_and_post(client, world, onboarded):
    _, invitation = onboarded
    assert client.get(f"/operator/tenants/charlie/invitations/{invitation.pk}/revoke/").status_code == 405
    client.force_login(world.a.owner)
    assert client.post(f"/operator/tenants/charlie/invitations/{invitation.pk}/revoke/").status_code == 404
    assert reload(invitation).status == InvitationStatus.PENDING


def test_it_lets_an_operator_suspend_and_reactivate_a_tenant(client, world, operator):
    client.force_login(operator)
    suspended = client.post("/operator/tenants/alpha/suspend/", {"reason": "Unpaid invoice"})
    assert suspended.status_code == 302
    assert Tenant.objects.get(slug="alpha").status == TenantStatus.SUSPENDED
    assert Tenant.objects.get(slug="bravo").status == TenantStatus.ACTIVE
    assert len(audit_entries(world.a.tenant, "tenant.suspended")) == 1

    reactivated = client.post("/operator/tenants/alpha/reactivate/")
    assert reactivated.status_code == 302
    assert Tenant.objects.get(slug="alpha").status == TenantStatus.ACTIVE
    assert len(audit_entries(world.a.tenant, "tenant.reactivated")) == 1


def test_it_answers_400_to_a_suspension_without_a_reason(client, world, operator):
    client.force_login(operator)
    response = client.post("/operator/tenants/alpha/suspend/", {"reason": ""})
    assert response.status_code == 400
    assert "reason" in response.context["suspend_form"].errors
    assert Tenant.objects.get(slug="alpha").status == TenantStatus.ACTIVE


def test_it_shows_a_message_when_suspending_twice(client, world, operator):
    client.force_login(operator)
    client.post("/operator/tenants/alpha/suspend/", {"reason": "Unpaid invoice"})
    response = client.post("/operator/tenants/alpha/suspend/", {"reason": "Again"})
    assert response.status_code == 302
    assert last_message(response) == "Alpha Inc is already suspended."
    assert Tenant.objects.get(slug="alpha").suspended_reason == "Unpaid invoice"


def test_it_refuses_get_on_suspend_and_reactivate(client, world, operator):
    client.force_login(operator)
    assert client.get("/operator/tenants/alpha/suspend/").status_code == 405
    assert client.get("/operator/tenants/alpha/reactivate/").status_code == 405


def test_it_refuses_a_suspension_by_non_staff(client, world):
    client.force_login(world.a.owner)
    response = client.post("/operator/tenants/bravo/suspend/", {"reason": "Mischief"})
    assert response.status_code == 404
    assert Tenant.objects.get(slug="bravo").status == TenantStatus.ACTIVE


MODELS_ON_OFFER = ("offline-small", "anthropic.claude-3-haiku")


@pytest.fixture
def models_on_offer(world):
    """The shared models a tier may allow, and a tenant's fine-tuned one, which it may not."""
    from agents.models import ModelOffering, Provider

    with all_tenants("test: the model catalogue"):
        for key in MODELS_ON_OFFER:
            base = ModelOffering.unscoped.create(key=key, name=key, provider=Provider.OFFLINE, model_id=key)
        ModelOffering.unscoped.create(
            key="alpha-ft",
            name="Alpha's",
            provider=Provider.OFFLINE,
            model_id="ft",
            base=base,
            owner_tenant=world.a.tenant,
        )


def tier_form(**overrides) -> dict:
    data = {
        "name": "Enterprise",
        "slug": "enterprise",
        "description": "For large teams",
        "monthly_price": "999.00",
        "included_tokens": "10000000",
        "overage_price_per_1k_tokens": "0.002",
        "requests_per_minute": "600",
        "tokens_per_minute": "1000000",
        "concurrent_sessions": "50",
        "allowed_models": "offline-small, anthropic.claude-3-haiku",
        "default_features": ["chat", "sso"],
        "celery_queue": "tier-enterprise",
    }
    data.update(overrides)
    return data


def test_it_lets_an_operator_create_a_tier(client, world, operator, models_on_offer):
    client.force_login(operator)
    response = client.post("/operator/tiers/new/", tier_form())
    assert response.status_code == 302
    assert response["Location"] == "/operator/tiers/"
    tier = Tier.objects.get(slug="enterprise")
    assert tier.monthly_price == Decimal("999.00")
    assert tier.allowed_models == ["offline-small", "anthropic.claude-3-haiku"]
    assert tier.default_features == ["chat", "sso"]
    assert len(platform_audit_entries("tier.created")) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("monthly_price", "-1"),
        ("monthly_price", "abc"),
        ("included_tokens", "-5"),
        ("overage_price_per_1k_tokens", "-0.01"),
        ("requests_per_minute", "-1"),
        ("concurrent_sessions", "1.5"),
        ("default_features", ["telepathy"]),
        ("celery_queue", "Bad Queue!"),
        ("slug", "Not A Slug"),
    ],
)
def test_it_answers_400_to_a_new_tier_with_bad_values_and_saves_nothing(client, world, operator, field, value):
    client.force_login(operator)
    response = client.post("/operator/tiers/new/", tier_form(**{field: value}))
    assert response.status_code == 400
    assert field in response.context["form"].errors
    assert not Tier.objects.filter(name="Enterprise").exists()
    assert platform_audit_entries("tier.created") == []


@pytest.mark.parametrize("name", ["Standard-Test", "standard-TEST", "  STANDARD-TEST "])
def test_it_answers_400_to_a_new_tier_named_as_another_whatever_the_case(client, world, operator, name):
    client.force_login(operator)
    response = client.post("/operator/tiers/new/", tier_form(name=name, allowed_models=""))
    assert response.status_code == 400
    assert response.context["form"].errors["name"] == ["Another tier is called Standard-Test."]
    assert not Tier.objects.filter(slug="enterprise").exists()
    assert platform_audit_entries("tier.created") == []


def test_it_lets_a_tier_keep_its_own_name_in_another_case(client, world, operator):
    client.force_login(operator)
    form = tier_form(slug="standard-test", name="STANDARD-test", allowed_models="", celery_queue="tier-standard-test")
    response = client.post("/operator/tiers/standard-test/", form)
    assert response.status_code == 302
    assert Tier.objects.get(slug="standard-test").name == "STANDARD-test"


def test_it_answers_400_to_a_tier_queue_that_is_a_tenants_dedicated_queue(client, world, operator):
    Tenant.objects.filter(pk=world.a.tenant.pk).update(
        deployment_model="silo", resource_bindings={"celery_queue": "alpha-own"}
    )
    client.force_login(operator)
    response = client.post("/operator/tiers/new/", tier_form(celery_queue="alpha-own", allowed_models=""))
    assert response.status_code == 400
    assert response.context["form"].errors["celery_queue"] == ["alpha-own is the dedicated queue of Alpha Inc (alpha)."]
    assert not Tier.objects.filter(slug="enterprise").exists()
    with pytest.raises(services.ServiceError):
        services.save_tier(operator, Tier(**{**tier_fields(), "celery_queue": "alpha-own"}))
    assert not Tier.objects.filter(slug="enterprise").exists()


def tier_fields() -> dict:
    return {"name": "Enterprise", "slug": "enterprise", "celery_queue": "tier-enterprise"}


def test_it_answers_400_to_a_tier_edit_with_a_negative_price_and_changes_nothing(client, world, operator):
    client.force_login(operator)
    response = client.post("/operator/tiers/standard-test/", tier_form(slug="standard-test", monthly_price="-10"))
    assert response.status_code == 400
    assert "monthly_price" in response.context["form"].errors
    tier = Tier.objects.get(slug="standard-test")
    assert (tier.name, tier.monthly_price) == ("Standard-Test", Decimal("100.00"))
    assert platform_audit_entries("tier.updated") == []


def test_it_saves_and_audits_a_tier_edit(client, world, operator, models_on_offer):
    client.force_login(operator)
    response = client.post(
        "/operator/tiers/standard-test/",
        tier_form(slug="standard-test", name="Standard", monthly_price="150.00", celery_queue="tier-standard-test"),
    )
    assert response.status_code == 302
    tier = Tier.objects.get(slug="standard-test")
    assert (tier.name, tier.monthly_price) == ("Standard", Decimal("150.00"))
    [entry] = platform_audit_entries("tier.updated")
    assert entry.before["monthly_price"] == "100.00"
    assert entry.after["monthly_price"] == "150.00"


def test_it_names_the_unknown_models_of_a_tier_and_changes_nothing(client, world, operator, models_on_offer):
    client.force_login(operator)
    form = tier_form(slug="standard-test", allowed_models="offline-small, gpt-99-typo, alpha-ft")
    response = client.post("/operator/tiers/standard-test/", form)
    assert response.status_code == 400
    [error] = response.context["form"].errors["allowed_models"]
    assert error == "Unknown models: gpt-99-typo, alpha-ft. Models on offer: anthropic.claude-3-haiku, offline-small."
    assert Tier.objects.get(slug="standard-test").allowed_models == []
    assert platform_audit_entries("tier.updated") == []


def test_it_filters_the_console_audit_log_by_action_and_tenant(client, world, operator):
    services.set_tenant_status(operator, world.a.tenant, TenantStatus.SUSPENDED, "Unpaid invoice")
    services.set_tenant_status(operator, world.b.tenant, TenantStatus.SUSPENDED, "Fraud review")
    services.update_tenant(operator, world.b.tenant, name="Bravo GmbH")
    client.force_login(operator)

    everything = client.get("/operator/audit/")
    assert {e.action for e in everything.context["page"]} == {"tenant.suspended", "tenant.updated"}

    by_action = client.get("/operator/audit/", {"action": "suspended"})
    assert sorted(e.tenant.slug for e in by_action.context["page"]) == ["alpha", "bravo"]

    by_tenant = client.get("/operator/audit/", {"tenant": "bravo"})
    assert sorted(e.action for e in by_tenant.context["page"]) == ["tenant.suspended", "tenant.updated"]

    both = client.get("/operator/audit/", {"action": "suspended", "tenant": "alpha"})
    [entry] = both.context["page"]
    assert entry.after["reason"] == "Unpaid invoice"
    assert b"Unpaid invoice" in both.content


def test_it_filters_the_console_audit_log_by_actor_and_date(client, world, operator):
    services.set_tenant_status(operator, world.a.tenant, TenantStatus.SUSPENDED, "Unpaid invoice")
    client.force_login(operator)
    today = timezone.now().date()
    mine = client.get("/operator/audit/", {"actor": "operator@portal", "since": today.isoformat()})
    assert [e.action for e in mine.context["page"]] == ["tenant.suspended"]
    nobody = client.get("/operator/audit/", {"actor": "someone-else@"})
    assert list(nobody.context["page"]) == []
    future = client.get("/operator/audit/", {"since": (today + timedelta(days=1)).isoformat()})
    assert list(future.context["page"]) == []


def test_it_ignores_invalid_filters_in_the_console_audit_log(client, world, operator):
    services.set_tenant_status(operator, world.a.tenant, TenantStatus.SUSPENDED, "Unpaid invoice")
    client.force_login(operator)
    response = client.get("/operator/audit/", {"since": "not-a-date", "page": "last"})
    assert response.status_code == 200
    assert [e.action for e in response.context["page"]] == ["tenant.suspended"]

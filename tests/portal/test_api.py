"""The REST API under /api/v1/: tenants, members, invitations, and its problem JSON errors."""

from urllib.parse import urlencode

import pytest

from tenants import services
from tenants.models import InvitationStatus, TenantStatus
from tenants.roles import Role
from tests import factories
from tests.portal.helpers import problem, validation_problem
from tests.tenants.helpers import audit_entries, invitations, member_roles, reload


def api(slug: str, rest: str = "") -> str:
    return f"/api/v1/tenants/{slug}/{rest}"


def signed_in_as(client, user):
    client.force_login(user)
    return client


# --- /api/v1/tenants/ ---------------------------------------------------------------


def test_it_lists_only_the_callers_tenants_with_role_and_entitlements(client, world):
    response = signed_in_as(client, world.a.admin).get("/api/v1/tenants/")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1
    [tenant] = body["results"]
    assert tenant["slug"] == "alpha"
    assert tenant["role"] == "admin"
    assert tenant["entitlements"] == ["api_access", "chat"]
    assert tenant["tier"]["slug"] == "standard-test"


def test_it_lists_each_tenant_with_the_callers_role_there(client, world):
    factories.add_member(world.b.tenant, world.a.owner, Role.BILLING)
    body = signed_in_as(client, world.a.owner).get("/api/v1/tenants/").json()
    assert {t["slug"]: t["role"] for t in body["results"]} == {"alpha": "owner", "bravo": "billing"}


def test_it_lists_no_tenant_for_an_outsider(client, world):
    body = signed_in_as(client, world.outsider).get("/api/v1/tenants/").json()
    assert body == {"count": 0, "results": []}


def test_it_shows_grants_and_revocations_in_the_entitlements(client, world):
    tenant = world.a.tenant
    tenant.feature_grants = ["memory"]
    tenant.feature_revocations = ["chat"]
    tenant.save(update_fields=["feature_grants", "feature_revocations"])
    [alpha] = signed_in_as(client, world.a.member).get("/api/v1/tenants/").json()["results"]
    assert alpha["entitlements"] == ["api_access", "memory"]


def test_it_retrieves_a_tenant_of_the_caller(client, world):
    response = signed_in_as(client, world.a.member).get("/api/v1/tenants/alpha/")
    assert response.status_code == 200
    assert (response.json()["slug"], response.json()["role"]) == ("alpha", "member")


def test_it_answers_404_for_a_tenant_of_someone_else(client, world):
    response = signed_in_as(client, world.a.owner).get("/api/v1/tenants/bravo/")
    body = problem(response, 404)
    assert "Bravo" not in response.content.decode()
    assert body["title"] == "Not found"


@pytest.mark.parametrize("path", ["/api/v1/tenants/", "/api/v1/tenants/alpha/", api("alpha", "members/")])
def test_it_refuses_anonymous_callers_with_a_problem(client, world, path):
    response = client.get(path)
    assert response.status_code in (401, 403)
    body = problem(response, response.status_code)
    assert "alpha.test" not in response.content.decode()
    assert body["detail"]


# --- members ------------------------------------------------------------------------


def test_it_lists_the_members_of_the_tenant_to_an_admin(client, world):
    response = signed_in_as(client, world.a.admin).get(api("alpha", "members/"))
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 4
    assert {m["email"]: m["role"] for m in body["results"]} == {
        "admin@alpha.test": "admin",
        "billing@alpha.test": "billing",
        "member@alpha.test": "member",
        "owner@alpha.test": "owner",
    }


def test_it_retrieves_one_member_for_an_admin(client, world):
    membership = world.a.memberships["billing"]
    response = signed_in_as(client, world.a.admin).get(api("alpha", f"members/{membership.pk}/"))
    assert response.status_code == 200
    assert response.json()["email"] == "billing@alpha.test"


@pytest.mark.parametrize("role", ["member", "billing"])
def test_it_answers_a_403_problem_to_a_teammate_without_the_right(client, world, role):
    response = signed_in_as(client, world.a.user(role)).get(api("alpha", "members/"))
    body = problem(response, 403)
    assert "members.view" in body["detail"]


def test_it_answers_a_404_problem_to_the_other_tenants_owner(client, world):
    response = signed_in_as(client, world.b.owner).get(api("alpha", "members/"))
    problem(response, 404)
    assert "alpha.test" not in response.content.decode()


def test_it_answers_a_404_problem_to_an_outsider(client, world):
    problem(signed_in_as(client, world.outsider).get(api("alpha", "members/")), 404)


def test_it_answers_a_404_problem_for_a_tenant_that_does_not_exist(client, world):
    problem(signed_in_as(client, world.a.owner).get(api("nope", "members/")), 404)


def test_it_finds_no_member_id_of_the_other_tenant_under_the_own_slug(client, world):
    foreign = world.b.memberships["member"]
    client.force_login(world.a.owner)
    get = client.get(api("alpha", f"members/{foreign.pk}/"))
    patch = client.patch(api("alpha", f"members/{foreign.pk}/"), {"role": "admin"}, content_type="application/json")
    delete = client.delete(api("alpha", f"members/{foreign.pk}/"))
    problem(get, 404)
    problem(patch, 404)
    problem(delete, 404)
    assert member_roles(world.b.tenant)["member@bravo.test"] == "member"


def test_it_answers_a_403_problem_with_the_reason_for_a_suspended_tenant(client, world, operator):
    services.set_tenant_status(operator, world.a.tenant, TenantStatus.SUSPENDED, "Unpaid invoice")
    response = signed_in_as(client, world.a.owner).get(api("alpha", "members/"))
    assert response.status_code == 403
    body = response.json()
    assert set(body) == {"type", "title", "status", "detail", "reason"}
    assert body["reason"] == "tenant_suspended"
    assert "Unpaid invoice" in body["detail"]


def test_the_suspended_tenant_problem_carries_the_providers_support_address(client, world, operator, settings):
    settings.SUPPORT_EMAIL = "support@provider.example"
    services.set_tenant_status(operator, world.a.tenant, TenantStatus.SUSPENDED, "Unpaid invoice")
    body = signed_in_as(client, world.a.owner).get(api("alpha", "members/")).json()
    assert body["reason"] == "tenant_suspended"
    assert body["support_email"] == "support@provider.example"


def test_it_changes_a_members_role_on_patch(client, world):
    membership = world.a.memberships["member"]
    response = signed_in_as(client, world.a.owner).patch(
        api("alpha", f"members/{membership.pk}/"), {"role": "admin"}, content_type="application/json"
    )
    assert response.status_code == 200
    assert response.json()["role"] == "admin"
    assert member_roles(world.a.tenant)["member@alpha.test"] == "admin"
    [entry] = audit_entries(world.a.tenant, "membership.role_changed")
    assert (entry.before, entry.after, entry.actor) == ({"role": "member"}, {"role": "admin"}, world.a.owner)


def test_it_answers_a_validation_problem_to_a_patch_with_an_unknown_role(client, world):
    membership = world.a.memberships["member"]
    response = signed_in_as(client, world.a.owner).patch(
        api("alpha", f"members/{membership.pk}/"), {"role": "emperor"}, content_type="application/json"
    )
    body = validation_problem(response)
    assert list(body["errors"]) == ["role"]


def test_it_answers_a_400_problem_to_demoting_the_last_owner(client, world):
    membership = world.a.memberships["owner"]
    response = signed_in_as(client, world.a.owner).patch(
        api("alpha", f"members/{membership.pk}/"), {"role": "member"}, content_type="application/json"
    )
    body = problem(response, 400)
    assert "at least one owner" in body["detail"]
    assert member_roles(world.a.tenant)["owner@alpha.test"] == "owner"


def test_it_forbids_an_admin_to_make_an_owner(client, world):
    membership = world.a.memberships["member"]
    response = signed_in_as(client, world.a.admin).patch(
        api("alpha", f"members/{membership.pk}/"), {"role": "owner"}, content_type="application/json"
    )
    problem(response, 403)
    assert member_roles(world.a.tenant)["member@alpha.test"] == "member"


def test_it_forbids_a_member_to_change_roles(client, world):
    membership = world.a.memberships["member"]
    response = signed_in_as(client, world.a.member).patch(
        api("alpha", f"members/{membership.pk}/"), {"role": "admin"}, content_type="application/json"
    )
    problem(response, 403)
    assert member_roles(world.a.tenant)["member@alpha.test"] == "member"


def test_it_removes_a_member_on_delete(client, world):
    membership = world.a.memberships["billing"]
    response = signed_in_as(client, world.a.admin).delete(api("alpha", f"members/{membership.pk}/"))
    assert response.status_code == 204
    assert "billing@alpha.test" not in member_roles(world.a.tenant)
    assert len(audit_entries(world.a.tenant, "membership.removed")) == 1


def test_it_answers_a_400_problem_with_the_reason_to_deleting_the_last_owner(client, world):
    membership = world.a.memberships["owner"]
    response = signed_in_as(client, world.a.owner).delete(api("alpha", f"members/{membership.pk}/"))
    body = problem(response, 400)
    assert body["detail"] == "non_field_errors: The last owner cannot be removed."
    assert body["errors"] == {"non_field_errors": ["The last owner cannot be removed."]}
    assert member_roles(world.a.tenant)["owner@alpha.test"] == "owner"


def test_it_creates_no_members_through_the_api(client, world):
    response = signed_in_as(client, world.a.owner).post(
        api("alpha", "members/"), {"email": "x@example.test"}, content_type="application/json"
    )
    assert 400 <= response.status_code < 500
    problem(response, response.status_code)
    assert "x@example.test" not in member_roles(world.a.tenant)


# --- invitations --------------------------------------------------------------------


def test_it_creates_an_invitation_on_post(client, world):
    response = signed_in_as(client, world.a.admin).post(
        api("alpha", "invitations/"), {"email": "New@Example.test", "role": "billing"}, content_type="application/json"
    )
    assert response.status_code == 201
    body = response.json()
    assert (body["email"], body["role"], body["status"]) == ("new@example.test", "billing", "pending")
    assert body["invited_by"] == "admin@alpha.test"
    assert "secret_hash" not in body
    assert "nonce" not in body
    [invitation] = invitations(world.a.tenant)
    assert invitation.pk == body["id"]
    assert invitations(world.b.tenant) == []


def test_it_defaults_the_invited_role_to_member(client, world):
    response = signed_in_as(client, world.a.owner).post(
        api("alpha", "invitations/"), {"email": "new@example.test"}, content_type="application/json"
    )
    assert response.status_code == 201
    assert response.json()["role"] == "member"


def test_it_accepts_a_form_encoded_invitation(client, world):
    response = signed_in_as(client, world.a.owner).post(
        api("alpha", "invitations/"),
        urlencode({"email": "form@example.test", "role": "member"}),
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 201


def test_it_answers_a_400_problem_to_inviting_an_existing_member(client, world):
    response = signed_in_as(client, world.a.owner).post(
        api("alpha", "invitations/"), {"email": "member@alpha.test"}, content_type="application/json"
    )
    body = problem(response, 400)
    assert "already a member" in body["detail"]


def test_it_answers_a_validation_problem_to_an_invalid_email(client, world):
    response = signed_in_as(client, world.a.owner).post(
        api("alpha", "invitations/"), {"email": "nope"}, content_type="application/json"
    )
    body = validation_problem(response)
    assert body["errors"] == {"email": ["Enter a valid email address."]}
    assert invitations(world.a.tenant) == []


def test_it_forbids_a_member_to_invite(client, world):
    response = signed_in_as(client, world.a.member).post(
        api("alpha", "invitations/"), {"email": "friend@example.test"}, content_type="application/json"
    )
    problem(response, 403)
    assert invitations(world.a.tenant) == []


def test_it_lists_the_invitations_to_an_admin_and_filters_by_status(client, world):
    factories.make_invitation(world.a.tenant, "pending@example.test")
    factories.make_invitation(world.a.tenant, "revoked@example.test", status=InvitationStatus.REVOKED)
    factories.make_invitation(world.b.tenant, "bravo-invitee@example.test")
    client.force_login(world.a.admin)
    everything = client.get(api("alpha", "invitations/")).json()
    pending = client.get(api("alpha", "invitations/"), {"status": "pending"}).json()
    assert {i["email"] for i in everything["results"]} == {"pending@example.test", "revoked@example.test"}
    assert [i["email"] for i in pending["results"]] == ["pending@example.test"]


def test_it_rotates_the_link_and_counts_the_send_on_resend(client, world):
    invitation = factories.make_invitation(world.a.tenant, "pending@example.test")
    old_token = invitation.token
    response = signed_in_as(client, world.a.admin).post(api("alpha", f"invitations/{invitation.pk}/resend/"))
    assert response.status_code == 200
    assert response.json()["sent_count"] == 1
    assert services.find_invitation(old_token) is None


def test_it_answers_a_400_problem_to_resending_a_revoked_invitation(client, world):
    invitation = factories.make_invitation(world.a.tenant, "gone@example.test", status=InvitationStatus.REVOKED)
    response = signed_in_as(client, world.a.admin).post(api("alpha", f"invitations/{invitation.pk}/resend/"))
    assert "pending" in problem(response, 400)["detail"]


def test_it_revokes_an_invitation_on_delete(client, world):
    invitation = factories.make_invitation(world.a.tenant, "pending@example.test")
    client.force_login(world.a.admin)
    response = client.delete(api("alpha", f"invitations/{invitation.pk}/"))
    assert response.status_code == 204
    assert reload(invitation).status == InvitationStatus.REVOKED
    again = client.delete(api("alpha", f"invitations/{invitation.pk}/"))
    assert "no longer pending" in problem(again, 400)["detail"]


def test_it_finds_no_invitation_of_the_other_tenant(client, world):
    foreign = factories.make_invitation(world.b.tenant, "bravo-invitee@example.test")
    client.force_login(world.a.owner)
    problem(client.get(api("alpha", f"invitations/{foreign.pk}/")), 404)
    problem(client.post(api("alpha", f"invitations/{foreign.pk}/resend/")), 404)
    problem(client.delete(api("alpha", f"invitations/{foreign.pk}/")), 404)
    assert reload(foreign).status == InvitationStatus.PENDING
    assert reload(foreign).sent_count == 0


def test_it_forbids_an_admin_to_revoke_an_owner_invitation(client, world):
    invitation = factories.make_invitation(world.a.tenant, "boss@example.test", role=Role.OWNER)
    response = signed_in_as(client, world.a.admin).delete(api("alpha", f"invitations/{invitation.pk}/"))
    problem(response, 403)
    assert reload(invitation).status == InvitationStatus.PENDING


def test_it_answers_a_404_problem_to_an_unknown_api_path(client, world):
    problem(signed_in_as(client, world.a.owner).get("/api/v1/nothing-here/"), 404)


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/tenants/{tenant_slug}/conversations/{id}/", "title"),
        ("/api/v1/tenants/{tenant_slug}/members/{id}/", "role"),
        ("/api/v1/tenants/{tenant_slug}/knowledge-bases/{id}/", "name"),
    ],
)
def test_the_schema_publishes_the_fields_a_patch_requires(client, path, field):
    # Each PATCH validates its request whole (a rename needs the name, a role change the
    # role) and answers 400 without it: the schema says so rather than "all optional".
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    body = schema["paths"][path]["patch"]["requestBody"]
    reference = body["content"]["application/json"]["schema"]["$ref"]

    assert body["required"] is True
    assert field in schema["components"]["schemas"][reference.rsplit("/", 1)[-1]]["required"]

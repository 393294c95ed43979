"""The role table, as a matrix: what each role may do, then the same rules through the services.

The expected table is written out here on purpose: changing ROLE_ACTIONS must
change this file too, so that a widened role is a reviewed decision.
"""

import pytest
from django.core.exceptions import PermissionDenied

from tenants import services
from tenants.context import tenant_context
from tenants.models import InvitationStatus
from tenants.roles import ALL_ACTIONS, Role, can, require
from tests import factories
from tests.tenants.helpers import actor, member_roles, reload

Y, N = True, False
ROLES = ("owner", "admin", "member", "billing")

# action: allowed for (owner, admin, member, billing)
EXPECTED = {
    "tenant.view": (Y, Y, Y, Y),
    "agents.use": (Y, Y, Y, N),
    "members.view": (Y, Y, N, N),
    "members.invite": (Y, Y, N, N),
    "members.change_role": (Y, Y, N, N),
    "members.remove": (Y, Y, N, N),
    "members.manage_owners": (Y, N, N, N),
    "invitations.manage": (Y, Y, N, N),
    "audit.view": (Y, Y, N, N),
    "billing.view": (Y, Y, N, Y),
    "api_clients.manage": (Y, Y, N, N),
    "agents.manage": (Y, Y, N, N),
    "sso.manage": (Y, Y, N, N),
    "sso.manage_provider": (Y, N, N, N),
    "security.manage": (Y, Y, N, N),
    "knowledge.manage": (Y, Y, N, N),
    "guardrails.view": (Y, Y, N, N),
    "guardrails.manage": (Y, Y, N, N),
    "billing.limits": (Y, Y, N, N),
}

MATRIX = [
    pytest.param(role, action, allowed[i], id=f"{role}-{action}")
    for action, allowed in EXPECTED.items()
    for i, role in enumerate(ROLES)
]


def test_it_lists_every_action_and_every_role_in_the_expected_table():
    assert set(EXPECTED) == set(ALL_ACTIONS)
    assert set(ROLES) == set(Role.values)


@pytest.mark.parametrize(("role", "action", "allowed"), MATRIX)
def test_it_allows_exactly_what_the_table_says(role, action, allowed):
    assert can(role, action) is allowed


@pytest.mark.parametrize(("role", "action"), [(r, a) for r, a, allowed in (p.values for p in MATRIX) if allowed])
def test_it_lets_require_pass_for_an_allowed_action(role, action):
    require(role, action)


@pytest.mark.parametrize(("role", "action"), [(r, a) for r, a, allowed in (p.values for p in MATRIX) if not allowed])
def test_it_raises_permission_denied_from_require_for_a_denied_action(role, action):
    with pytest.raises(PermissionDenied):
        require(role, action)


@pytest.mark.parametrize("action", sorted(EXPECTED))
def test_it_allows_nothing_without_a_role(action):
    assert can(None, action) is False


@pytest.mark.parametrize("action", sorted(EXPECTED))
def test_it_allows_nothing_to_an_unknown_role(action):
    assert can("superuser", action) is False


@pytest.mark.parametrize("role", [*ROLES, None])
def test_it_raises_value_error_for_an_unknown_action(role):
    with pytest.raises(ValueError, match="Unknown action"):
        can(role, "members.delete_everything")


# --- the same rules through the services -------------------------------------------

INVITE_ALLOWED = [
    ("owner", "member"),
    ("owner", "admin"),
    ("owner", "billing"),
    ("owner", "owner"),
    ("admin", "member"),
    ("admin", "admin"),
    ("admin", "billing"),
]
INVITE_DENIED = [
    ("admin", "owner"),
    *[(actor_role, role) for actor_role in ("member", "billing") for role in ROLES],
]


@pytest.mark.parametrize(("actor_role", "role"), INVITE_ALLOWED)
def test_it_lets_owners_and_admins_invite(world, actor_role, role):
    with tenant_context(world.a.tenant):
        invitation = services.invite_member(actor(world.a, actor_role), email="new@example.test", role=role)
    assert invitation.role == role
    assert invitation.status == InvitationStatus.PENDING


@pytest.mark.parametrize(("actor_role", "role"), INVITE_DENIED)
def test_it_refuses_invitations_the_role_table_does_not_allow(world, actor_role, role):
    with tenant_context(world.a.tenant), pytest.raises(PermissionDenied):
        services.invite_member(actor(world.a, actor_role), email="new@example.test", role=role)


# (actor, the member's current role, the new role)
CHANGE_ALLOWED = [
    ("owner", "member", "admin"),
    ("owner", "member", "owner"),
    ("owner", "admin", "billing"),
    ("admin", "member", "admin"),
    ("admin", "billing", "member"),
    ("admin", "admin", "member"),
]
CHANGE_DENIED = [
    ("admin", "owner", "member"),  # an admin cannot touch an owner
    ("admin", "member", "owner"),  # nor make one
    *[(actor_role, "admin", "member") for actor_role in ("member", "billing")],
    *[(actor_role, "member", "admin") for actor_role in ("member", "billing")],
]


@pytest.mark.parametrize(("actor_role", "target", "new_role"), CHANGE_ALLOWED)
def test_it_lets_owners_and_admins_change_roles(world, actor_role, target, new_role):
    with tenant_context(world.a.tenant):
        services.change_role(actor(world.a, actor_role), world.a.memberships[target], new_role)
    assert reload(world.a.memberships[target]).role == new_role


@pytest.mark.parametrize(("actor_role", "target", "new_role"), CHANGE_DENIED)
def test_it_refuses_role_changes_the_role_table_does_not_allow(world, actor_role, target, new_role):
    with tenant_context(world.a.tenant), pytest.raises(PermissionDenied):
        services.change_role(actor(world.a, actor_role), world.a.memberships[target], new_role)
    assert reload(world.a.memberships[target]).role == target


REMOVE_ALLOWED = [
    ("owner", "admin"),
    ("owner", "member"),
    ("owner", "billing"),
    ("admin", "admin"),
    ("admin", "member"),
    ("admin", "billing"),
]
REMOVE_DENIED = [
    ("admin", "owner"),
    *[(actor_role, target) for actor_role in ("member", "billing") for target in ("owner", "admin", "billing")],
]


@pytest.mark.parametrize(("actor_role", "target"), REMOVE_ALLOWED)
def test_it_lets_owners_and_admins_remove_members(world, actor_role, target):
    with tenant_context(world.a.tenant):
        services.remove_member(actor(world.a, actor_role), world.a.memberships[target])
    assert world.a.user(target).email not in member_roles(world.a.tenant)


@pytest.mark.parametrize(("actor_role", "target"), REMOVE_DENIED)
def test_it_refuses_removals_the_role_table_does_not_allow(world, actor_role, target):
    with tenant_context(world.a.tenant), pytest.raises(PermissionDenied):
        services.remove_member(actor(world.a, actor_role), world.a.memberships[target])
    assert member_roles(world.a.tenant)[world.a.user(target).email] == target


def test_it_lets_an_owner_remove_another_owner(world):
    second_owner = factories.add_member(world.a.tenant, role=Role.OWNER)
    with tenant_context(world.a.tenant):
        services.remove_member(actor(world.a, "owner"), second_owner)
    assert second_owner.user.email not in member_roles(world.a.tenant)


# (actor, role of the invitation)
MANAGE_INVITATION_ALLOWED = [("owner", "member"), ("owner", "owner"), ("admin", "member"), ("admin", "billing")]
MANAGE_INVITATION_DENIED = [("admin", "owner"), ("member", "member"), ("billing", "member")]


@pytest.mark.parametrize(("actor_role", "role"), MANAGE_INVITATION_ALLOWED)
def test_it_lets_owners_and_admins_resend_and_revoke_invitations(world, actor_role, role):
    invitation = factories.make_invitation(world.a.tenant, "invitee@example.test", role=role)
    with tenant_context(world.a.tenant):
        services.resend_invitation(actor(world.a, actor_role), invitation)
        services.revoke_invitation(actor(world.a, actor_role), invitation)
    assert reload(invitation).status == InvitationStatus.REVOKED


@pytest.mark.parametrize(("actor_role", "role"), MANAGE_INVITATION_DENIED)
def test_it_refuses_to_resend_invitations_the_role_table_does_not_allow(world, actor_role, role):
    invitation = factories.make_invitation(world.a.tenant, "invitee@example.test", role=role)
    with tenant_context(world.a.tenant), pytest.raises(PermissionDenied):
        services.resend_invitation(actor(world.a, actor_role), invitation)
    assert reload(invitation).sent_count == 0


@pytest.mark.parametrize(("actor_role", "role"), MANAGE_INVITATION_DENIED)
def test_it_refuses_to_revoke_invitations_the_role_table_does_not_allow(world, actor_role, role):
    invitation = factories.make_invitation(world.a.tenant, "invitee@example.test", role=role)
    with tenant_context(world.a.tenant), pytest.raises(PermissionDenied):
        services.revoke_invitation(actor(world.a, actor_role), invitation)
    assert reload(invitation).status == InvitationStatus.PENDING


def test_it_refuses_an_actor_whose_membership_is_in_the_other_tenant(world):
    # B's owner, with B's membership, acting while A is the tenant in the context.
    with tenant_context(world.a.tenant), pytest.raises(services.ServiceError):
        services.invite_member(actor(world.b, "owner"), email="new@example.test", role=Role.MEMBER)

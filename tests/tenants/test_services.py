"""The administrative services: invitations, members, operator actions, entitlements, bindings."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from tenants import entitlements, services
from tenants.context import tenant_context
from tenants.models import DeploymentModel, InvitationStatus, Membership, Tenant, TenantStatus, Tier
from tenants.roles import Role
from tests import factories
from tests.tenants.helpers import (
    IP,
    actor,
    audit_entries,
    invitations,
    member_roles,
    platform_audit_entries,
    reload,
)


def invite(side, email="new.person@example.test", role=Role.MEMBER, as_role="owner"):
    with tenant_context(side.tenant):
        return services.invite_member(actor(side, as_role), email=email, role=role)


# --- invite_member ------------------------------------------------------------------


def test_it_normalises_the_invited_email(world):
    invitation = invite(world.a, email="  New.Person@EXAMPLE.Test ")
    assert invitation.email == "new.person@example.test"


def test_it_creates_a_pending_invitation_with_the_role_and_the_inviter(world):
    invitation = invite(world.a, role=Role.BILLING)
    assert invitation.tenant_id == world.a.tenant.pk
    assert invitation.status == InvitationStatus.PENDING
    assert invitation.role == Role.BILLING
    assert invitation.invited_by == world.a.owner
    assert invitation.expires_at > timezone.now() + timedelta(days=6)


def test_it_refuses_to_invite_an_existing_member(world):
    with pytest.raises(services.ServiceError, match="already a member"):
        invite(world.a, email="MEMBER@alpha.test")
    assert invitations(world.a.tenant) == []


def test_it_invites_a_member_of_the_other_tenant(world):
    invitation = invite(world.a, email="member@bravo.test")
    assert invitation.email == "member@bravo.test"


def test_it_refuses_a_second_pending_invitation_for_the_same_email(world):
    invite(world.a, email="twice@example.test")
    with pytest.raises(services.ServiceError, match="pending invitation"):
        invite(world.a, email="Twice@Example.test")
    assert len(invitations(world.a.tenant)) == 1


def test_it_allows_a_pending_invitation_for_the_same_email_in_each_tenant(world):
    invite(world.a, email="both@example.test")
    invite(world.b, email="both@example.test")
    assert [i.email for i in invitations(world.a.tenant)] == ["both@example.test"]
    assert [i.email for i in invitations(world.b.tenant)] == ["both@example.test"]


def test_it_allows_a_new_invitation_after_the_old_one_was_revoked(world):
    first = invite(world.a, email="again@example.test")
    with tenant_context(world.a.tenant):
        services.revoke_invitation(actor(world.a, "owner"), first)
    second = invite(world.a, email="again@example.test")
    assert second.pk != first.pk


def test_it_refuses_an_unknown_role(world):
    with pytest.raises(services.ServiceError, match="Unknown role"):
        invite(world.a, role="superuser")


def test_it_audits_the_invitation(world):
    invitation = invite(world.a, email="audited@example.test", role=Role.ADMIN)
    [entry] = audit_entries(world.a.tenant, "invitation.created")
    assert entry.actor == world.a.owner
    assert entry.actor_email == "owner@alpha.test"
    assert entry.tenant_id == world.a.tenant.pk
    assert entry.target_id == str(invitation.pk)
    assert entry.after == {"email": "audited@example.test", "role": "admin"}
    assert entry.ip_address == IP
    assert audit_entries(world.b.tenant, "invitation.created") == []


def test_it_sends_the_invitation_email_with_the_link_once_the_transaction_commits(
    world, settings, mailoutbox, django_capture_on_commit_callbacks
):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        invitation = invite(world.a, email="mailed@example.test")
        assert mailoutbox == []
    assert len(callbacks) == 1
    [message] = mailoutbox
    assert message.to == ["mailed@example.test"]
    assert "Alpha Inc" in message.subject
    assert f"{settings.SITE_URL}/invitations/{invitation.token}/" in message.body
    assert reload(invitation).last_sent_at is not None


def test_it_sends_no_email_when_the_transaction_rolls_back(world, mailoutbox, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        invite(world.a)
    assert len(callbacks) == 1  # queued for commit, not sent inline
    assert mailoutbox == []


# --- resend / revoke ----------------------------------------------------------------


def test_it_rotates_the_secret_on_resend_so_the_old_link_stops_working(world):
    invitation = invite(world.a)
    old_token = invitation.token
    with tenant_context(world.a.tenant):
        services.resend_invitation(actor(world.a, "admin"), invitation)
    assert invitation.token != old_token
    assert services.find_invitation(old_token) is None
    assert services.find_invitation(invitation.token).pk == invitation.pk


def test_it_counts_a_resend_extends_the_expiry_and_audits_it(world):
    invitation = factories.make_invitation(
        world.a.tenant, "late@example.test", expires_at=timezone.now() + timedelta(hours=1)
    )
    with tenant_context(world.a.tenant):
        services.resend_invitation(actor(world.a, "admin"), invitation)
    fresh = reload(invitation)
    assert fresh.sent_count == 1
    assert fresh.expires_at > timezone.now() + timedelta(days=6)
    [entry] = audit_entries(world.a.tenant, "invitation.resent")
    assert entry.actor == world.a.admin


def test_it_refuses_to_resend_an_invitation_that_is_not_pending(world):
    invitation = invite(world.a)
    with tenant_context(world.a.tenant):
        services.revoke_invitation(actor(world.a, "owner"), invitation)
        invitation.refresh_from_db()
        with pytest.raises(services.ServiceError, match="pending"):
            services.resend_invitation(actor(world.a, "owner"), invitation)


def test_it_marks_a_revoked_invitation_and_audits_it(world):
    invitation = invite(world.a)
    with tenant_context(world.a.tenant):
        services.revoke_invitation(actor(world.a, "owner"), invitation)
    assert reload(invitation).status == InvitationStatus.REVOKED
    [entry] = audit_entries(world.a.tenant, "invitation.revoked")
    assert (entry.before, entry.after) == ({"status": "pending"}, {"status": "revoked"})


def test_it_refuses_to_revoke_twice(world):
    invitation = invite(world.a)
    with tenant_context(world.a.tenant):
        services.revoke_invitation(actor(world.a, "owner"), invitation)
        with pytest.raises(services.ServiceError, match="no longer pending"):
            services.revoke_invitation(actor(world.a, "owner"), invitation)
    assert len(audit_entries(world.a.tenant, "invitation.revoked")) == 1


def test_it_refuses_to_accept_a_revoked_invitation(world):
    invitation = invite(world.a, email="outsider@nowhere.test")
    with tenant_context(world.a.tenant):
        services.revoke_invitation(actor(world.a, "owner"), invitation)
    with pytest.raises(services.ServiceError, match="already been used or was revoked"):
        services.accept_invitation(invitation, world.outsider)


# --- find_invitation ----------------------------------------------------------------


def test_it_finds_an_invitation_by_its_token(world):
    invitation = invite(world.a)
    assert services.find_invitation(invitation.token).pk == invitation.pk


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "1", "1.", ".abc", "x.abc", "²." + "a" * 64, "99999999999999999999999.abc", "1." + "a" * 200],
)
def test_it_finds_no_invitation_for_a_malformed_token(world, token):
    assert services.find_invitation(token) is None


def test_it_finds_no_invitation_for_the_secret_under_another_tenants_id(world):
    invitation = invite(world.a)
    _, secret = invitation.token.split(".")
    assert services.find_invitation(f"{world.b.tenant.pk}.{secret}") is None


# --- accept_invitation --------------------------------------------------------------


def test_it_creates_a_membership_with_the_invited_role_on_accept(world):
    invitation = invite(world.a, email="outsider@nowhere.test", role=Role.BILLING)
    membership = services.accept_invitation(invitation, world.outsider, ip=IP)
    assert membership.tenant_id == world.a.tenant.pk
    assert membership.user == world.outsider
    assert member_roles(world.a.tenant)["outsider@nowhere.test"] == "billing"
    assert "outsider@nowhere.test" not in member_roles(world.b.tenant)
    fresh = reload(invitation)
    assert fresh.status == InvitationStatus.ACCEPTED
    assert fresh.accepted_by == world.outsider


def test_it_audits_the_acceptance(world):
    invitation = invite(world.a, email="outsider@nowhere.test")
    services.accept_invitation(invitation, world.outsider, ip=IP)
    [entry] = audit_entries(world.a.tenant, "membership.created")
    assert entry.actor == world.outsider
    assert entry.target_repr == "outsider@nowhere.test"
    assert entry.after == {"role": "member", "via": "invitation", "invitation": invitation.pk}
    assert entry.ip_address == IP


def test_it_ignores_the_case_of_the_email_on_accept(world):
    invitation = invite(world.a, email="OUTSIDER@nowhere.test")
    services.accept_invitation(invitation, world.outsider)
    assert "outsider@nowhere.test" in member_roles(world.a.tenant)


def test_it_accepts_an_invitation_only_once(world):
    invitation = invite(world.a, email="outsider@nowhere.test")
    services.accept_invitation(invitation, world.outsider)
    with pytest.raises(services.ServiceError, match="already been used"):
        services.accept_invitation(invitation, world.outsider)
    assert len(audit_entries(world.a.tenant, "membership.created")) == 1


def test_it_refuses_an_acceptance_by_another_email(world):
    invitation = invite(world.a, email="someone.else@example.test")
    with pytest.raises(services.ServiceError, match="This invitation is for someone.else@example.test"):
        services.accept_invitation(invitation, world.outsider)
    assert "outsider@nowhere.test" not in member_roles(world.a.tenant)
    assert reload(invitation).status == InvitationStatus.PENDING


def test_it_refuses_to_accept_an_expired_invitation(world):
    invitation = factories.make_invitation(
        world.a.tenant, "outsider@nowhere.test", expires_at=timezone.now() - timedelta(minutes=1)
    )
    with pytest.raises(services.ServiceError, match="expired"):
        services.accept_invitation(invitation, world.outsider)
    assert "outsider@nowhere.test" not in member_roles(world.a.tenant)


def test_it_refuses_to_accept_into_a_suspended_tenant(world, operator):
    invitation = invite(world.a, email="outsider@nowhere.test")
    services.set_tenant_status(operator, world.a.tenant, TenantStatus.SUSPENDED, "unpaid invoice")
    invitation = services.find_invitation(invitation.token)
    with pytest.raises(services.ServiceError, match="suspended"):
        services.accept_invitation(invitation, world.outsider)
    assert "outsider@nowhere.test" not in member_roles(world.a.tenant)


def test_it_keeps_the_membership_when_an_existing_member_accepts(world):
    invitation = factories.make_invitation(world.a.tenant, "member@alpha.test", role=Role.ADMIN)
    membership = services.accept_invitation(invitation, world.a.member)
    assert membership.pk == world.a.memberships["member"].pk
    assert member_roles(world.a.tenant)["member@alpha.test"] == "member"
    assert len(audit_entries(world.a.tenant, "invitation.accepted_existing_member")) == 1


# --- change_role / remove_member ----------------------------------------------------


def test_it_changes_a_role_and_audits_before_and_after(world):
    membership = world.a.memberships["member"]
    with tenant_context(world.a.tenant):
        services.change_role(actor(world.a, "owner"), membership, Role.ADMIN)
    assert member_roles(world.a.tenant)["member@alpha.test"] == "admin"
    assert member_roles(world.b.tenant)["member@bravo.test"] == "member"
    [entry] = audit_entries(world.a.tenant, "membership.role_changed")
    assert (entry.before, entry.after) == ({"role": "member"}, {"role": "admin"})
    assert entry.target_repr == "member@alpha.test"
    assert entry.ip_address == IP


def test_it_changes_nothing_for_the_same_role(world):
    with tenant_context(world.a.tenant):
        services.change_role(actor(world.a, "owner"), world.a.memberships["admin"], Role.ADMIN)
    assert audit_entries(world.a.tenant, "membership.role_changed") == []


def test_it_refuses_to_change_to_an_unknown_role(world):
    with tenant_context(world.a.tenant), pytest.raises(services.ServiceError, match="Unknown role"):
        services.change_role(actor(world.a, "owner"), world.a.memberships["member"], "root")


def test_it_refuses_to_demote_the_last_owner(world):
    with tenant_context(world.a.tenant), pytest.raises(services.ServiceError, match="at least one owner"):
        services.change_role(actor(world.a, "owner"), world.a.memberships["owner"], Role.ADMIN)
    assert member_roles(world.a.tenant)["owner@alpha.test"] == "owner"


def test_it_lets_an_owner_step_down_once_there_is_another_owner(world):
    with tenant_context(world.a.tenant):
        services.change_role(actor(world.a, "owner"), world.a.memberships["admin"], Role.OWNER)
        services.change_role(actor(world.a, "owner"), world.a.memberships["owner"], Role.ADMIN)
    assert member_roles(world.a.tenant)["owner@alpha.test"] == "admin"
    assert member_roles(world.a.tenant)["admin@alpha.test"] == "owner"


def test_it_counts_no_owner_of_the_other_tenant_towards_the_last_owner(world):
    factories.add_member(world.b.tenant, role=Role.OWNER)
    with tenant_context(world.a.tenant), pytest.raises(services.ServiceError):
        services.change_role(actor(world.a, "owner"), world.a.memberships["owner"], Role.MEMBER)


def test_it_removes_a_membership_and_audits_it(world):
    with tenant_context(world.a.tenant):
        services.remove_member(actor(world.a, "admin"), world.a.memberships["member"])
    assert "member@alpha.test" not in member_roles(world.a.tenant)
    assert world.a.member.is_active  # the account stays; only the membership goes
    [entry] = audit_entries(world.a.tenant, "membership.removed")
    assert entry.before == {"email": "member@alpha.test", "role": "member"}
    assert entry.actor == world.a.admin


def test_it_refuses_to_remove_the_last_owner(world):
    with tenant_context(world.a.tenant), pytest.raises(services.ServiceError, match="last owner"):
        services.remove_member(actor(world.a, "owner"), world.a.memberships["owner"])
    assert member_roles(world.a.tenant)["owner@alpha.test"] == "owner"
    assert audit_entries(world.a.tenant, "membership.removed") == []


def test_it_refuses_to_remove_a_member_twice(world):
    membership = world.a.memberships["member"]
    with tenant_context(world.a.tenant):
        services.remove_member(actor(world.a, "owner"), membership)
        with pytest.raises(services.ServiceError, match="already removed"):
            services.remove_member(actor(world.a, "owner"), membership)


# --- operator: tenants --------------------------------------------------------------


def test_it_onboards_a_tenant_with_an_owner_invitation(world, operator):
    tier = world.a.tenant.tier
    tenant, invitation = services.create_tenant(
        operator, slug="charlie", name="Charlie Ltd", tier=tier, owner_email="Boss@Charlie.TEST", ip=IP
    )
    assert Tenant.objects.get(slug="charlie") == tenant
    assert tenant.status == TenantStatus.ACTIVE
    assert invitation.tenant_id == tenant.pk
    assert invitation.role == Role.OWNER
    assert invitation.email == "boss@charlie.test"
    assert invitation.invited_by == operator
    assert services.find_invitation(invitation.token).pk == invitation.pk
    [created] = audit_entries(tenant, "tenant.created")
    assert created.actor == operator
    assert created.after["slug"] == "charlie"
    assert created.after["tier"] == tier.name  # the tier people know, not its database id
    assert created.ip_address == IP
    assert len(audit_entries(tenant, "invitation.created")) == 1


def test_it_onboards_a_tenant_without_an_invitation_when_no_owner_email_is_given(world, operator):
    tenant, invitation = services.create_tenant(operator, slug="charlie", name="Charlie", tier=world.a.tenant.tier)
    assert invitation is None
    assert invitations(tenant) == []


def test_it_refuses_a_tenant_with_a_duplicate_slug(world, operator):
    with pytest.raises(ValidationError):
        services.create_tenant(operator, slug="alpha", name="Another Alpha", tier=world.a.tenant.tier)
    assert Tenant.objects.filter(slug="alpha").count() == 1


def test_it_refuses_a_tenant_with_a_malformed_slug(world, operator):
    with pytest.raises(ValidationError):
        services.create_tenant(operator, slug="Not A Slug", name="X", tier=world.a.tenant.tier)


def test_it_lets_only_operators_create_tenants(world):
    with pytest.raises(services.ServiceError, match="Only operators"):
        services.create_tenant(world.a.owner, slug="charlie", name="Charlie", tier=world.a.tenant.tier)
    assert not Tenant.objects.filter(slug="charlie").exists()


def test_it_audits_a_tier_change_as_tier_changed(world, operator):
    old_tier = world.a.tenant.tier
    new_tier = factories.make_tier("premium")
    services.update_tenant(operator, world.a.tenant, ip=IP, tier=new_tier)
    assert Tenant.objects.get(pk=world.a.tenant.pk).tier == new_tier
    assert Tenant.objects.get(pk=world.b.tenant.pk).tier == old_tier
    [entry] = audit_entries(world.a.tenant, "tenant.tier_changed")
    assert entry.before == {"tier": old_tier.name}
    assert entry.after == {"tier": new_tier.name}
    assert entry.actor == operator


def test_it_audits_a_change_between_tiers_of_the_same_name(world, operator):
    twin = factories.make_tier("twin", name=world.a.tenant.tier.name)
    services.update_tenant(operator, world.a.tenant, tier=twin)
    [entry] = audit_entries(world.a.tenant, "tenant.tier_changed")
    assert entry.before == entry.after == {"tier": twin.name}  # recorded, though both read the same


def test_it_audits_several_tenant_changes_as_updated(world, operator):
    services.update_tenant(operator, world.a.tenant, name="Alpha GmbH", region="eu-central-1")
    [entry] = audit_entries(world.a.tenant, "tenant.updated")
    assert entry.before == {"name": "Alpha Inc", "region": "us-east-1"}
    assert entry.after == {"name": "Alpha GmbH", "region": "eu-central-1"}


def test_it_writes_no_audit_for_a_tenant_update_that_changes_nothing(world, operator):
    services.update_tenant(operator, world.a.tenant, name="Alpha Inc")
    assert audit_entries(world.a.tenant, "tenant.updated") == []


def test_it_refuses_tenant_fields_the_update_does_not_manage(world, operator):
    with pytest.raises(services.ServiceError, match="Cannot change status"):
        services.update_tenant(operator, world.a.tenant, status=TenantStatus.SUSPENDED)


def test_it_refuses_unknown_resource_binding_keys(world, operator):
    with pytest.raises(ValidationError):
        services.update_tenant(operator, world.a.tenant, resource_bindings={"root_password": "x"})


def test_it_needs_a_reason_to_suspend(world, operator):
    with pytest.raises(services.ServiceError, match="Say why"):
        services.set_tenant_status(operator, world.a.tenant, TenantStatus.SUSPENDED, "   ")
    assert Tenant.objects.get(pk=world.a.tenant.pk).status == TenantStatus.ACTIVE


def test_it_records_the_suspension_reason_and_audits_it(world, operator):
    services.set_tenant_status(operator, world.a.tenant, TenantStatus.SUSPENDED, " unpaid invoice ", ip=IP)
    tenant = Tenant.objects.get(pk=world.a.tenant.pk)
    assert tenant.status == TenantStatus.SUSPENDED
    assert tenant.suspended_reason == "unpaid invoice"
    assert Tenant.objects.get(pk=world.b.tenant.pk).status == TenantStatus.ACTIVE
    [entry] = audit_entries(world.a.tenant, "tenant.suspended")
    assert entry.before == {"status": "active"}
    assert entry.after == {"status": "suspended", "reason": "unpaid invoice"}


def test_it_refuses_to_suspend_twice(world, operator):
    services.set_tenant_status(operator, world.a.tenant, TenantStatus.SUSPENDED, "unpaid invoice")
    with pytest.raises(services.ServiceError, match="already suspended"):
        services.set_tenant_status(operator, world.a.tenant, TenantStatus.SUSPENDED, "again")
    assert Tenant.objects.get(pk=world.a.tenant.pk).suspended_reason == "unpaid invoice"


def test_it_clears_the_reason_on_reactivation(world, operator):
    services.set_tenant_status(operator, world.a.tenant, TenantStatus.SUSPENDED, "unpaid invoice")
    services.set_tenant_status(operator, world.a.tenant, TenantStatus.ACTIVE)
    tenant = Tenant.objects.get(pk=world.a.tenant.pk)
    assert (tenant.status, tenant.suspended_reason) == (TenantStatus.ACTIVE, "")
    assert len(audit_entries(world.a.tenant, "tenant.reactivated")) == 1


def test_it_refuses_an_unknown_tenant_status(world, operator):
    with pytest.raises(services.ServiceError, match="Unknown status"):
        services.set_tenant_status(operator, world.a.tenant, "deleted", "because")


def test_it_lets_only_operators_change_a_tenants_status(world):
    with pytest.raises(services.ServiceError, match="Only operators"):
        services.set_tenant_status(world.a.owner, world.b.tenant, TenantStatus.SUSPENDED, "mischief")
    assert Tenant.objects.get(pk=world.b.tenant.pk).status == TenantStatus.ACTIVE


# --- operator: tiers ----------------------------------------------------------------


def new_tier(**fields) -> Tier:
    values = {
        "slug": "enterprise",
        "name": "Enterprise",
        "monthly_price": Decimal("999.00"),
        "included_tokens": 10_000_000,
        "default_features": ["chat", "sso"],
        "allowed_models": ["offline-small"],
        "celery_queue": "tier-enterprise",
    }
    values.update(fields)
    return Tier(**values)


def test_it_creates_a_tier_and_audits_every_field(world, operator):
    tier = services.save_tier(operator, new_tier(), ip=IP)
    assert Tier.objects.get(slug="enterprise") == tier
    [entry] = platform_audit_entries("tier.created")
    assert entry.tenant_id is None
    assert entry.actor == operator
    assert entry.before == {}
    assert entry.after["slug"] == "enterprise"
    assert entry.after["monthly_price"] == "999.00"
    assert entry.after["default_features"] == ["chat", "sso"]


def test_it_audits_only_the_changed_fields_of_a_tier(world, operator):
    tier = Tier.objects.get(pk=world.a.tenant.tier_id)
    tier.name = "Standard Plus"
    tier.requests_per_minute = 120
    services.save_tier(operator, tier)
    [entry] = platform_audit_entries("tier.updated")
    assert entry.before == {"name": "Standard-Test", "requests_per_minute": 60}
    assert entry.after == {"name": "Standard Plus", "requests_per_minute": 120}


def test_it_hides_platform_audit_rows_from_every_tenant(world, operator):
    services.save_tier(operator, new_tier())
    assert audit_entries(world.a.tenant, "tier.created") == []
    assert audit_entries(world.b.tenant, "tier.created") == []


def test_it_refuses_a_tier_with_unknown_default_features(world, operator):
    with pytest.raises(ValidationError) as excinfo:
        services.save_tier(operator, new_tier(default_features=["chat", "telepathy"]))
    assert "default_features" in excinfo.value.message_dict
    assert not Tier.objects.filter(slug="enterprise").exists()
    assert platform_audit_entries("tier.created") == []


def test_it_refuses_a_tier_with_a_negative_price(world, operator):
    with pytest.raises(ValidationError) as excinfo:
        services.save_tier(operator, new_tier(monthly_price=Decimal("-1")))
    assert "monthly_price" in excinfo.value.message_dict


def test_it_lets_only_operators_save_tiers(world):
    with pytest.raises(services.ServiceError):
        services.save_tier(world.a.owner, new_tier())
    assert not Tier.objects.filter(slug="enterprise").exists()


# --- entitlements and bindings ------------------------------------------------------


def test_it_entitles_a_tenant_to_its_tiers_features(world):
    assert entitlements.effective_entitlements(world.a.tenant) == {"chat", "api_access"}


def test_it_adds_grants_and_drops_revocations_from_the_entitlements(world):
    tenant = world.a.tenant
    tenant.feature_grants = ["memory"]
    tenant.feature_revocations = ["chat"]
    assert entitlements.effective_entitlements(tenant) == {"api_access", "memory"}
    assert entitlements.has_feature(tenant, "memory")
    assert not entitlements.has_feature(tenant, "chat")
    assert entitlements.effective_entitlements(world.b.tenant) == {"chat", "api_access"}


def test_it_lets_a_revocation_win_over_a_grant_of_the_same_feature(world):
    tenant = world.a.tenant
    tenant.feature_grants = ["sso"]
    tenant.feature_revocations = ["sso"]
    assert "sso" not in entitlements.effective_entitlements(tenant)


def test_it_describes_where_each_feature_comes_from(world):
    tenant = world.a.tenant
    tenant.feature_grants = ["memory"]
    tenant.feature_revocations = ["chat"]
    rows = {row["key"]: (row["enabled"], row["source"]) for row in entitlements.describe(tenant)}
    assert rows["api_access"] == (True, "tier")
    assert rows["memory"] == (True, "granted")
    assert rows["chat"] == (False, "revoked")
    assert rows["sso"] == (False, "not included")
    assert set(rows) == set(entitlements.FEATURES)


def test_it_raises_for_an_unknown_feature(world):
    with pytest.raises(ValueError, match="Unknown feature"):
        entitlements.has_feature(world.a.tenant, "telepathy")


def test_it_refuses_unknown_granted_features_on_clean(world):
    tenant = world.a.tenant
    tenant.feature_grants = ["telepathy"]
    with pytest.raises(ValidationError):
        tenant.full_clean()


def test_it_runs_a_pool_tenant_on_its_tiers_queue(world):
    bindings = world.a.tenant.bindings
    assert bindings.celery_queue == "tier-standard-test"
    assert bindings.dedicated is False
    assert bindings.runtime_arn == ""


def test_it_gives_a_silo_tenant_a_dedicated_queue_named_after_it(world):
    tenant = world.b.tenant
    tenant.deployment_model = DeploymentModel.SILO
    assert tenant.bindings.celery_queue == "tenant-bravo"
    assert tenant.bindings.dedicated is True
    assert world.a.tenant.bindings.celery_queue == "tier-standard-test"


def test_it_uses_the_resources_a_silo_tenants_bindings_name(world):
    tenant = world.b.tenant
    tenant.deployment_model = DeploymentModel.SILO
    tenant.resource_bindings = {"celery_queue": "bravo-dedicated", "runtime_arn": "arn:aws:runtime/bravo"}
    assert tenant.bindings.celery_queue == "bravo-dedicated"
    assert tenant.bindings.runtime_arn == "arn:aws:runtime/bravo"
    assert tenant.bindings.memory_id == ""


def test_it_keeps_memberships_in_their_tenant(world):
    # Sanity of the fixture the other tests rely on: four people on each side.
    with tenant_context(world.a.tenant):
        assert Membership.objects.count() == 4
    with tenant_context(world.b.tenant):
        assert Membership.objects.count() == 4

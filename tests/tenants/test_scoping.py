import pytest

from tenants.context import TenantNotSet, all_tenants, tenant_context
from tenants.models import AuditLog, Membership


def test_it_raises_when_no_tenant_is_set(world):
    with pytest.raises(TenantNotSet):
        list(Membership.objects.all())


def test_it_returns_only_the_current_tenants_rows(world):
    with tenant_context(world.a.tenant):
        emails = set(Membership.objects.values_list("user__email", flat=True))
    assert emails == {"owner@alpha.test", "admin@alpha.test", "member@alpha.test", "billing@alpha.test"}


def test_it_fills_the_tenant_on_create(world):
    with tenant_context(world.b.tenant):
        membership = Membership.objects.create(user=world.outsider, role="member")
    assert membership.tenant_id == world.b.tenant.pk


def test_it_refuses_to_save_a_row_for_another_tenant(world):
    with tenant_context(world.a.tenant), pytest.raises(TenantNotSet):
        Membership(user=world.outsider, tenant=world.b.tenant, role="member").save()


def test_it_resets_the_context_after_the_block(world):
    with tenant_context(world.a.tenant):
        pass
    with pytest.raises(TenantNotSet):
        Membership.objects.count()


def test_it_reads_across_tenants_only_through_unscoped_inside_all_tenants(world):
    with all_tenants("test"):
        assert Membership.unscoped.count() == 8
        with pytest.raises(TenantNotSet):
            Membership.objects.count()


def test_related_managers_fail_closed_too(world):
    with pytest.raises(TenantNotSet):
        list(world.a.owner.memberships.all())


def test_the_audit_log_is_append_only(world):
    from django.core.exceptions import ValidationError

    with tenant_context(world.a.tenant):
        entry = AuditLog(action="x.y", actor=world.a.owner)
        entry.save()
        with pytest.raises(ValidationError):
            entry.save()
        with pytest.raises(ValidationError):
            entry.delete()

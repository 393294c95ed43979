"""The Django admin's edits of accounts and permission groups are audited, and allauth's own
admin pages that bind an identity to an account (addresses, IdP links and tokens, second
factors) only look."""

from __future__ import annotations

import pytest
from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from allauth.socialaccount.models import SocialAccount, SocialApp, SocialToken
from django.contrib.auth.models import Group, Permission

from portal.operator import services as operator_services
from tests.identity.test_admin_email_change import admin_user_form
from tests.tenants.helpers import audit_entries, platform_audit_entries

pytestmark = pytest.mark.django_db
CHANGED = operator_services.ACCOUNT_CHANGED


def platform_entries(action: str) -> list:
    return [e for e in platform_audit_entries(action) if e.tenant_id is None]


def test_it_audits_an_account_change_in_the_platform_log_and_the_members_tenant(client, world, operator):
    user = world.a.member
    client.force_login(operator)
    form = admin_user_form(user, email="m@elsewhere.test", full_name="Renamed", is_active="", is_staff="on")
    assert client.post(f"/admin/tenants/user/{user.pk}/change/", form).status_code == 302

    [entry] = audit_entries(world.a.tenant, CHANGED)
    assert (entry.actor, entry.target_id, entry.ip_address) == (operator, str(user.pk), "127.0.0.1")
    assert entry.before == {
        "email": "member@alpha.test",
        "full_name": "Alpha Member",
        "is_active": True,
        "is_staff": False,
    }
    assert entry.after == {"email": "m@elsewhere.test", "full_name": "Renamed", "is_active": False, "is_staff": True}
    [platform] = platform_entries(CHANGED)
    assert (platform.before, platform.after) == (entry.before, entry.after)
    assert audit_entries(world.b.tenant, CHANGED) == []


def test_it_audits_group_and_permission_changes_and_never_the_password(client, world, operator):
    support = Group.objects.create(name="Support")
    permission = Permission.objects.get(codename="view_tenant")
    user = world.b.admin
    client.force_login(operator)
    form = admin_user_form(user, groups=[str(support.pk)], user_permissions=[str(permission.pk)])
    assert client.post(f"/admin/tenants/user/{user.pk}/change/", form).status_code == 302

    [entry] = audit_entries(world.b.tenant, CHANGED)
    assert entry.before == {"groups": [], "user_permissions": []}
    assert entry.after == {"groups": ["Support"], "user_permissions": ["tenants.view_tenant"]}
    assert "password" not in str(entry.before) + str(entry.after)


def test_a_save_that_changes_nothing_records_nothing(client, world, operator):
    user = world.a.member
    client.force_login(operator)
    assert client.post(f"/admin/tenants/user/{user.pk}/change/", admin_user_form(user)).status_code == 302
    assert platform_audit_entries(CHANGED) == []


def test_it_audits_an_account_an_operator_creates(client, world, operator):
    client.force_login(operator)
    form = {"email": "New@Portal.test", "password1": "a-long-passphrase-2026", "password2": "a-long-passphrase-2026"}
    response = client.post("/admin/tenants/user/add/", form)
    assert response.status_code == 302, response.content.decode()[:2000]

    [entry] = platform_entries(CHANGED)
    assert (entry.actor, entry.before, entry.after) == (operator, {}, {"email": "new@portal.test", "created": True})
    assert "password" not in str(entry.after)
    assert list(EmailAddress.objects.filter(email="new@portal.test").values_list("primary", "verified")) == [
        (True, True)
    ]


def test_it_audits_a_groups_permission_change(client, world, operator):
    group = Group.objects.create(name="Support")
    permission = Permission.objects.get(codename="view_tenant")
    client.force_login(operator)
    form = {"name": "Support", "permissions": [str(permission.pk)]}
    assert client.post(f"/admin/auth/group/{group.pk}/change/", form).status_code == 302

    [entry] = platform_entries(operator_services.GROUP_CHANGED)
    assert (entry.actor, entry.before, entry.after) == (
        operator,
        {"permissions": []},
        {"permissions": ["tenants.view_tenant"]},
    )


# --- allauth's pages only look ----------------------------------------------------------------


@pytest.fixture
def bindings(world):
    """One of each of allauth's rows that ties something to tenant B's admin."""
    user = world.b.admin
    app = SocialApp.objects.create(provider="openid_connect", provider_id="tenant-bravo", name="Bravo", client_id="c")
    account = SocialAccount.objects.create(user=user, provider="tenant-bravo", uid="okta|b-admin")
    return {
        "account/emailaddress": EmailAddress.objects.get(user=user),
        "socialaccount/socialaccount": account,
        "socialaccount/socialtoken": SocialToken.objects.create(app=app, account=account, token="t"),
        "socialaccount/socialapp": app,
        "mfa/authenticator": Authenticator.objects.create(user=user, type="totp", data={"secret": "s"}),
    }


@pytest.mark.parametrize(
    "page",
    [
        "account/emailaddress",
        "socialaccount/socialaccount",
        "socialaccount/socialtoken",
        "socialaccount/socialapp",
        "mfa/authenticator",
    ],
)
def test_allauths_binding_pages_show_but_refuse_adding_changing_and_deleting(client, world, operator, bindings, page):
    row = bindings[page]
    client.force_login(operator)
    assert client.get(f"/admin/{page}/").status_code == 200
    assert client.get(f"/admin/{page}/{row.pk}/change/").status_code == 200
    # Whatever the form holds, the answer is no: the user field points at the operator.
    takeover = {"user": str(operator.pk), "email": "evil@attacker.test", "verified": "on", "primary": "on"}
    assert client.post(f"/admin/{page}/{row.pk}/change/", takeover).status_code == 403
    assert client.post(f"/admin/{page}/add/", takeover).status_code == 403
    assert client.post(f"/admin/{page}/{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert type(row).objects.filter(pk=row.pk).exists()


def test_the_mark_as_verified_action_is_gone(client, world, operator):
    unproven = EmailAddress.objects.create(user=world.b.member, email="second@bravo.test", verified=False)
    client.force_login(operator)
    assert "make_verified" not in client.get("/admin/account/emailaddress/").content.decode()

    client.post("/admin/account/emailaddress/", {"action": "make_verified", "_selected_action": [str(unproven.pk)]})

    unproven.refresh_from_db()
    assert not unproven.verified


def test_it_audits_a_password_an_operator_sets_without_the_password(client, world, operator):
    user = world.a.member
    client.force_login(operator)
    secret = "An0ther-long-passphrase!"
    response = client.post(
        f"/admin/tenants/user/{user.pk}/password/",
        {"password1": secret, "password2": secret, "usable_password": "true"},
    )
    assert response.status_code == 302
    user.refresh_from_db()
    assert user.check_password(secret)
    [entry] = audit_entries(world.a.tenant, CHANGED)
    assert (entry.actor, entry.target_id) == (operator, str(user.pk))
    assert entry.after == {"password": "set by an operator"}
    assert secret not in str(entry.before) + str(entry.after)
    assert [e.target_id for e in platform_entries(CHANGED)] == [str(user.pk)]


def test_a_refused_password_form_records_nothing(client, world, operator):
    client.force_login(operator)
    response = client.post(f"/admin/tenants/user/{world.a.member.pk}/password/", {"password1": "x", "password2": "y"})
    assert response.status_code == 200
    assert audit_entries(world.a.tenant, CHANGED) == []

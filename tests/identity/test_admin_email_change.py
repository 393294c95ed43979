"""An operator changes a person's address in the Django admin: the old address goes with it.

allauth finds accounts by its own EmailAddress rows (password reset, and the portal's SSO
linking through sso.accounts_with_email), not by User.email. Left behind, the old address
would still reset the moved account's password, and a sign-in through the old domain's IdP
would land in it.
"""

from __future__ import annotations

import pytest
from allauth.account.models import EmailAddress
from allauth.socialaccount.models import SocialAccount
from django.test import Client

from portal.operator import services as operator_services
from tenants.identity import sso
from tests.identity.sso_helpers import sign_in_via_sso, signed_in_user, social_accounts
from tests.tenants.helpers import audit_entries, platform_audit_entries

pytestmark = pytest.mark.django_db

NEW = "moved@elsewhere.test"
PROVIDER_ID = "tenant-alpha"


def admin_user_form(user, **changes) -> dict:
    """The Django admin's change form for `user`, as its page posts it."""
    data = {
        "email": user.email,
        "full_name": user.full_name,
        "is_active": "on" if user.is_active else "",
        "is_staff": "on" if user.is_staff else "",
        "is_superuser": "on" if user.is_superuser else "",
        "groups": [str(pk) for pk in user.groups.values_list("pk", flat=True)],
        "user_permissions": [str(pk) for pk in user.user_permissions.values_list("pk", flat=True)],
        "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
        "last_login_0": "",
        "last_login_1": "",
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value != ""}


def move(client, operator, user, email: str = NEW) -> None:
    client.force_login(operator)
    response = client.post(f"/admin/tenants/user/{user.pk}/change/", admin_user_form(user, email=email))
    assert response.status_code == 302, response.content.decode()[:2000]
    client.logout()


def addresses(user) -> list[tuple[str, bool, bool]]:
    return list(EmailAddress.objects.filter(user=user).values_list("email", "primary", "verified"))


def test_it_replaces_the_accounts_addresses_with_the_new_one_verified_and_primary(client, world, operator):
    user = world.a.admin
    move(client, operator, user, email="Moved@Elsewhere.test")

    user.refresh_from_db()
    assert user.email == NEW
    assert addresses(user) == [(NEW, True, True)]


def test_the_old_address_no_longer_resets_the_moved_accounts_password(client, world, operator, mailoutbox):
    move(client, operator, world.a.admin)

    response = client.post("/accounts/password/reset/", {"email": "admin@alpha.test"})

    assert response.status_code == 302
    assert not [m for m in mailoutbox if "/accounts/password/reset/key/" in m.body]


def test_the_new_address_resets_it(client, world, operator, mailoutbox):
    move(client, operator, world.a.admin)

    client.post("/accounts/password/reset/", {"email": NEW})

    [mail] = [m for m in mailoutbox if "/accounts/password/reset/key/" in m.body]
    assert mail.to == [NEW]


def test_sso_asserting_the_old_address_does_not_sign_in_to_the_moved_account(client, world, operator, idp, alpha_sso):
    moved = world.a.admin
    move(client, operator, moved)
    idp.user = {"sub": "okta|someone-else", "email": "admin@alpha.test", "email_verified": True}

    sign_in_via_sso(client, idp, "admin@alpha.test")

    assert signed_in_user(client) != moved
    assert addresses(moved) == [(NEW, True, True)]


def test_an_address_another_account_has_proven_is_refused_with_a_form_error(client, world, operator):
    EmailAddress.objects.create(user=world.b.owner, email="second@bravo.test", verified=True, primary=False)
    client.force_login(operator)
    user = world.a.admin
    response = client.post(f"/admin/tenants/user/{user.pk}/change/", admin_user_form(user, email="second@bravo.test"))

    assert response.status_code == 200
    assert "email" in response.context["adminform"].form.errors
    user.refresh_from_db()
    assert user.email == "admin@alpha.test"


# --- the old person's IdP identity goes with the old address --------------------------------


@pytest.fixture
def linked_admin(world, idp, alpha_sso):
    """Tenant A's admin, linked to the IdP identity okta|admin by a first SSO sign-in."""
    idp.user = {"sub": "okta|admin", "email": "admin@alpha.test", "email_verified": True}
    sign_in_via_sso(Client(), idp, "admin@alpha.test")
    assert social_accounts(PROVIDER_ID) == [("okta|admin", "admin@alpha.test")]
    return world.a.admin


def test_the_old_idp_identity_no_longer_signs_in_to_the_moved_account(client, operator, idp, linked_admin):
    move(client, operator, linked_admin)

    sign_in_via_sso(client, idp, "admin@alpha.test")  # the same subject as before the move

    assert signed_in_user(client) != linked_admin
    assert not SocialAccount.objects.filter(user=linked_admin).exists()


def test_the_next_sso_sign_in_with_the_new_address_links_the_moved_account_anew(client, operator, idp, linked_admin):
    move(client, operator, linked_admin, email="renamed@alpha.test")
    idp.user = {"sub": "okta|renamed", "email": "renamed@alpha.test", "email_verified": True}

    sign_in_via_sso(client, idp, "renamed@alpha.test")

    assert signed_in_user(client) == linked_admin
    assert social_accounts(PROVIDER_ID) == [("okta|renamed", "renamed@alpha.test")]


def test_the_audit_says_which_links_went_and_never_their_tokens(client, world, operator, linked_admin, alpha_sso):
    SocialAccount.objects.filter(user=linked_admin).update(extra_data={"access_token": "secret-access-token"})
    move(client, operator, linked_admin)

    [platform] = [e for e in platform_audit_entries(operator_services.ACCOUNT_CHANGED) if e.tenant_id is None]
    assert platform.after["sso_links_removed"] == [{"provider": PROVIDER_ID, "uid": "okta|admin"}]
    # The tenant's admins see the link as sso.account_linked showed it: never the IdP subject.
    [entry] = audit_entries(world.a.tenant, operator_services.ACCOUNT_CHANGED)
    assert entry.after["sso_links_removed"] == [
        {"provider": PROVIDER_ID, "subject_fingerprint": sso.subject_fingerprint(alpha_sso, "okta|admin")}
    ]
    assert "okta|admin" not in str(entry.before) + str(entry.after)
    assert "secret-access-token" not in str(platform.after) + str(entry.after)


def test_a_save_that_keeps_the_address_keeps_the_links(client, operator, linked_admin):
    client.force_login(operator)
    form = admin_user_form(linked_admin, full_name="Renamed Admin")
    assert client.post(f"/admin/tenants/user/{linked_admin.pk}/change/", form).status_code == 302

    assert social_accounts(PROVIDER_ID) == [("okta|admin", "admin@alpha.test")]
    [entry] = [e for e in platform_audit_entries(operator_services.ACCOUNT_CHANGED) if e.tenant_id is None]
    assert "sso_links_removed" not in entry.after

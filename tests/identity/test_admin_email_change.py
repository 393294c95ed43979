"""An operator changes a person's address in the Django admin: the old address goes with it.

allauth finds accounts by its own EmailAddress rows (password reset, and the portal's SSO
linking through sso.accounts_with_email), not by User.email. Left behind, the old address
would still reset the moved account's password, and a sign-in through the old domain's IdP
would land in it.
"""

from __future__ import annotations

import pytest
from allauth.account.models import EmailAddress

from tests.identity.sso_helpers import sign_in_via_sso, signed_in_user

pytestmark = pytest.mark.django_db

NEW = "moved@elsewhere.test"


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

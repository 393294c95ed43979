"""The page shell (templates/base.html): what every page carries."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db
ICON = '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'


def test_a_public_page_names_its_icon_so_browsers_do_not_ask_for_favicon_ico(client):
    assert ICON in client.get("/accounts/login/").content.decode()


def test_a_tenant_page_names_its_icon(client, world):
    client.force_login(world.a.owner)
    assert ICON in client.get("/t/alpha/").content.decode()


def test_the_icon_is_served(client):
    response = client.get("/static/favicon.svg")
    assert (response.status_code, response["Content-Type"]) == (200, "image/svg+xml")
    assert b"".join(response.streaming_content).startswith(b"<svg")


def test_it_names_the_signed_in_person_in_full_where_the_sidebar_cuts_it_short(client, world):
    client.force_login(world.a.owner)
    html = client.get("/t/alpha/").content.decode()
    name = world.a.owner.display_name
    assert f'<span class="sidebar-user-name" title="{name}">{name}</span>' in html


def test_it_gives_the_sidebar_account_buttons_their_own_row_so_name_and_email_fit():
    from pathlib import Path

    from django.conf import settings

    css = (Path(settings.BASE_DIR) / "static" / "css" / "portal.css").read_text()
    rule = css.split(".sidebar-user {", 1)[1].split("}", 1)[0]
    assert "flex-wrap: wrap" in rule


def test_it_names_the_current_organisation_in_full_where_the_switcher_cuts_it_short(client, world):
    client.force_login(world.a.owner)
    html = client.get("/t/alpha/").content.decode()
    name = world.a.tenant.name
    assert f'<span class="switcher-current" title="{name}">{name}</span>' in html

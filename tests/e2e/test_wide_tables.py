"""At a laptop's 1280 px, the wide tables fit their boxes: a person reads the whole row without
scrolling sideways (the phone layout, where a table scrolls in its box, is
tests/e2e/test_admin_mobile.py's and test_accessibility.py's).

The pages are the demo's, as the owner of Initech (Premium: every room) and as the operator,
each screenshotted to var/screenshots/wide-tables/."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from playwright.sync_api import expect

from tests.e2e.test_accessibility import OPERATOR_EMAIL, OWNER, browser_page, open_page, product  # noqa: F401

pytestmark = pytest.mark.browser

SHOTS = Path(settings.BASE_DIR) / "var" / "screenshots" / "wide-tables"
OWNER_TABLES = {
    "billing-events": "/t/initech/billing/events/",
    "billing-dashboard": "/t/initech/billing/",
    "billing-invoices": "/t/initech/billing/invoices/",
    "billing-limits": "/t/initech/billing/limits/",
    "audit-log": "/t/initech/audit/",
    "members": "/t/initech/members/",
    "api-clients": "/t/initech/api-clients/",
    "guardrails": "/t/initech/guardrails/",
    "knowledge": "/t/initech/knowledge/",
}
OPERATOR_TABLES = {
    "operator-tenants": "/operator/",
    "operator-tenant": "/operator/tenants/initech/",
    "operator-tiers": "/operator/tiers/",
    "operator-billing": "/operator/billing/",
    "operator-billing-tenant": "/operator/billing/tenants/initech/",
    "operator-invoices": "/operator/billing/invoices/",
    "operator-guardrails": "/operator/guardrails/",
    "operator-audit-log": "/operator/audit/",
    "operator-agent-identities": "/operator/agent-identities/",
    "operator-load": "/operator/load/?window=7d",
}

OVERFLOWING = """() => [...document.querySelectorAll('.table-wrap')]
    .filter(box => box.querySelector('table') && box.scrollWidth > box.clientWidth + 1)
    .map(box => `${box.querySelector('table').id || box.querySelector('table').getAttribute('aria-label')
        || box.getAttribute('aria-label') || 'a table'}: ${box.scrollWidth} px in a ${box.clientWidth} px box`)"""


# A badge sticking out of its table cell (into the next column, or cut at the table's edge).
BADGES_OUT = """() => [...document.querySelectorAll('td .badge')].filter(badge => {
        const cell = badge.closest('td').getBoundingClientRect(), box = badge.getBoundingClientRect();
        return box.left < cell.left - 0.5 || box.right > cell.right + 0.5;
    }).map(badge => `“${badge.textContent.trim()}” in ${badge.closest('table').id || 'a table'}`)"""

# A stat card's figure or note cut short (an ellipsis instead of its end).
STATS_CUT = """() => [...document.querySelectorAll('.stat-value, .stat-note')]
    .filter(text => text.scrollWidth > text.clientWidth + 1).map(text => `“${text.textContent.trim()}”`)"""


def assert_tables_fit(page, name: str) -> None:
    # A chart's table is folded away under it: opened, it must fit too.
    page.evaluate("document.querySelectorAll('details.chart-table').forEach(d => d.open = true)")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
    overflowing = page.evaluate(OVERFLOWING)
    assert overflowing == [], f"{page.url} at 1280 px: " + "; ".join(overflowing)
    assert page.evaluate(BADGES_OUT) == [], f"{page.url} at 1280 px: badges outside their cells"
    assert page.evaluate(STATS_CUT) == [], f"{page.url} at 1280 px: stat cards cut short"


@pytest.mark.parametrize("name", OWNER_TABLES)
def test_a_tenant_owners_tables_fit_a_1280_px_screen(product, launch_browser, name):  # noqa: F811
    page = browser_page(launch_browser, product, OWNER)
    open_page(page, OWNER_TABLES[name])
    assert_tables_fit(page, name)


@pytest.mark.parametrize("name", OPERATOR_TABLES)
def test_an_operators_tables_fit_a_1280_px_screen(product, launch_browser, name):  # noqa: F811
    page = browser_page(launch_browser, product, OPERATOR_EMAIL)
    open_page(page, OPERATOR_TABLES[name])
    assert_tables_fit(page, name)


LONG_AUDIT_ENTRY = (
    "jacqueline.vanderberghe-montgomery.operations@subsidiary.initech-international.example",
    "knowledge_base.document_reingestion_requested",
    "quarterly-compliance-report-final-version-reviewed-by-legal-department-2026.pdf",
    '{"email": "jacqueline.vanderberghe-montgomery@initech-international.example", '
    '"note": "Changed after the customer asked us to use the address of the operations team"}',
    '{"email": "ops-team-distribution-list@subsidiary.initech-international.example", '
    '"sso_links_removed": [{"provider": "tenant-initech", "uid": "00u1abcdefghijklmnopqrstuvwxyz0123456789ABCDEF"}], '
    '"webhook": "https://hooks.example.com/services/T0000000/B0000000/' + "X" * 40 + '"}',
    "2001:db8:85a3::8a2e:370:7334",
)


def add_long_audit_entries(product) -> None:  # noqa: F811
    """An entry with a long address, action code, target and values, in Initech's log and the platform's."""
    [(initech,)] = product.sql("SELECT id FROM tenants_tenant WHERE slug = %s", ("initech",))
    for tenant in (initech, None):
        product.write(
            "INSERT INTO tenants_auditlog (tenant_id, actor_email, action, target_type, target_id, target_repr,"
            " before, after, ip_address, created_at) VALUES (%s, %s, %s, '', '', %s, %s, %s, %s, CURRENT_TIMESTAMP)",
            (tenant, *LONG_AUDIT_ENTRY),
        )


PAGE_OVERFLOW = "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"


def test_the_audit_logs_fit_with_long_addresses_codes_and_values(product, launch_browser):  # noqa: F811
    """Long tokens wrap inside their cells: at 1280 px the table fits its box, at 390 px the page
    does not scroll sideways (the table may, in its box)."""
    add_long_audit_entries(product)
    for email, path, name in (
        (OWNER, "/t/initech/audit/", "audit-log-long"),
        (OPERATOR_EMAIL, "/operator/audit/", "operator-audit-log-long"),
    ):
        page = browser_page(launch_browser, product, email)
        open_page(page, path)
        expect(page.locator("#audit-table")).to_contain_text("document_reingestion_requested")
        assert_tables_fit(page, name)
        page.set_viewport_size({"width": 390, "height": 900})
        page.screenshot(path=str(SHOTS / f"{name}-390.png"), full_page=True)
        assert page.evaluate(PAGE_OVERFLOW) <= 0, f"{path} at 390 px scrolls sideways"


def set_suspended(page, slug: str, suspended: bool) -> None:
    """The operator suspends or reactivates a tenant from its console page (as a person would)."""
    page.goto(f"/operator/tenants/{slug}/")
    if suspended:
        page.once("dialog", lambda dialog: dialog.accept())  # "Suspend Acme Corporation?"
        page.fill("#suspend-form [name=reason]", "unpaid invoice")
        page.click("#suspend-form button[type=submit]")
    else:
        page.click("#reactivate-form button[type=submit]")
    expect(page.locator(".flash-success")).to_be_visible()


def test_the_load_page_fits_with_a_suspended_tenant_among_the_shared_ones(product, launch_browser):  # noqa: F811
    """A suspended tenant's row carries a "Suspended" badge beside its slug: with it, the Load
    page's table still fits and its tier badges stay in their cells. Last in this file: it
    reactivates the tenant it suspended, whatever happens."""
    page = browser_page(launch_browser, product, OPERATOR_EMAIL)
    set_suspended(page, "acme", True)
    try:
        open_page(page, "/operator/load/?window=7d")
        expect(page.locator("#load-shared tr[data-slug=acme] .status-suspended")).to_be_visible()
        assert_tables_fit(page, "operator-load-suspended")
    finally:
        set_suspended(page, "acme", False)

"""The operator finalises last month's invoice: the button asks first, in the page, and only the
confirmation posts."""

from __future__ import annotations

import datetime as dt

import pytest
from playwright.sync_api import expect

from billing import invoices as inv
from billing.accounting import month_start
from billing.models import Invoice, InvoiceStatus
from tenants.context import all_tenants
from tests import factories

pytestmark = pytest.mark.browser

LAST_MONTH = month_start(month_start() - dt.timedelta(days=1))


def test_the_operator_confirms_then_the_invoice_is_final(world, operator, live_server, launch_browser, screenshot):
    invoice = inv.draft_invoice(world.a.tenant, LAST_MONTH)
    number = inv.invoice_number(invoice)
    page = launch_browser().new_context(base_url=live_server.url).new_page()
    page.goto("/accounts/login/")
    page.fill("#id_login", operator.email)
    page.fill("#id_password", factories.PASSWORD)
    page.click("#login-form button[type=submit]")
    page.goto(f"/operator/billing/invoices/{invoice.pk}/")

    panel = page.locator("#finalise-invoice .confirm-panel")
    expect(panel).to_be_hidden()
    page.click("#finalise-invoice summary")
    expect(panel).to_be_visible()
    expect(panel).to_contain_text("Finalise this invoice?")
    with all_tenants("test"):
        assert Invoice.unscoped.get(pk=invoice.pk).status == InvoiceStatus.DRAFT  # opening the panel posts nothing
    screenshot(page, "finalise-invoice-confirm")

    panel.get_by_role("button", name=f"Finalise {number}").click()
    expect(page.locator(".flash-success")).to_contain_text(f"{number} is final")
    expect(page.locator("dl.kv")).to_contain_text("Final since")
    expect(page.locator("#finalise-invoice")).to_have_count(0)
    with all_tenants("test"):
        assert Invoice.unscoped.get(pk=invoice.pk).status == InvoiceStatus.FINAL

"""Month end for the operator: finalising asks first, and past-month drafts are marked ready and
can be finalised together, each one through finalise_invoice (so each is audited)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse

from billing import invoices as inv
from billing.accounting import month_start
from billing.models import Invoice, InvoiceStatus
from tenants.context import all_tenants
from tenants.models import AuditLog
from tests.html_tree import confirm_step, parse

pytestmark = pytest.mark.django_db

THIS_MONTH = month_start()
LAST_MONTH = month_start(THIS_MONTH - dt.timedelta(days=1))
INVOICES = "/operator/billing/invoices/"
FINALISE_READY = "/operator/billing/invoices/finalise-ready/"


@pytest.fixture
def month_end(world):
    """Alpha and Bravo owe last month (drafts, ready); Alpha's running month is a draft too (not ready)."""
    return {
        "alpha_last": inv.draft_invoice(world.a.tenant, LAST_MONTH),
        "bravo_last": inv.draft_invoice(world.b.tenant, LAST_MONTH),
        "alpha_now": inv.draft_invoice(world.a.tenant, THIS_MONTH),
    }


def statuses() -> dict[tuple[str, dt.date], str]:
    with all_tenants("test"):
        return {(i.tenant.slug, i.period): i.status for i in Invoice.unscoped.select_related("tenant")}


def finalised_audits() -> int:
    with all_tenants("test"):
        return AuditLog.unscoped.filter(action="invoice.finalised").count()


def test_it_asks_before_finalising_an_invoice(month_end, operator, client):
    invoice = month_end["alpha_last"]
    client.force_login(operator)
    page = parse(client.get(reverse("operator:billing_invoice", kwargs={"invoice_id": invoice.pk})).content)
    details, form = confirm_step(page, f"/operator/billing/invoices/{invoice.pk}/finalise/")
    assert "Finalise invoice" in details.elements[0].text
    assert "Finalise this invoice?" in details.text
    assert [b.text for b in form.find_all("button")] == ["Finalise INV-" + f"{LAST_MONTH:%Y%m}-{invoice.tenant_id:05d}"]
    assert statuses()[("alpha", LAST_MONTH)] == InvoiceStatus.DRAFT


def test_a_past_month_draft_is_marked_ready_and_the_running_month_is_not(month_end, operator, client):
    client.force_login(operator)
    page = parse(client.get(INVOICES).content)
    rows = page.find_all("table", id="invoice-table")[0].find_all("tbody")[0].find_all("tr")
    ready = {
        row.find_all("td")[2].text: bool(row.find_all("span", class_="badge badge-ready"))
        for row in rows
        if row.find_all("td")[1].text == "Alpha Inc"
    }
    assert ready == {f"{LAST_MONTH:%B %Y}": True, f"{THIS_MONTH:%B %Y}": False}
    badges = page.find_all("span", class_="badge badge-ready")
    assert [b.text for b in badges] == ["Ready to finalise"] * 2  # "Ready", and to a screen reader the rest


def test_it_finalises_all_ready_drafts_behind_one_confirmation(month_end, operator, client):
    client.force_login(operator)
    page = parse(client.get(INVOICES).content)
    details, form = confirm_step(page, FINALISE_READY)
    assert details.elements[0].text == "Finalise all 2 ready drafts"
    assert "Finalise 2 drafts?" in details.text

    response = client.post(FINALISE_READY, follow=True)

    assert statuses() == {
        ("alpha", LAST_MONTH): InvoiceStatus.FINAL,
        ("bravo", LAST_MONTH): InvoiceStatus.FINAL,
        ("alpha", THIS_MONTH): InvoiceStatus.DRAFT,
    }
    assert finalised_audits() == 2
    body = response.content.decode()
    assert "Finalised 2 ready drafts" in body
    assert inv.invoice_number(month_end["alpha_last"]) in body and inv.invoice_number(month_end["bravo_last"]) in body
    # Nothing left to finalise: the page no longer offers it, and a second post changes nothing.
    assert parse(response.content).find_all("form", action=FINALISE_READY) == []
    again = client.post(FINALISE_READY, follow=True)
    assert "No drafts are ready to finalise." in again.content.decode()
    assert finalised_audits() == 2


def test_a_draft_that_fails_is_reported_by_number_and_the_others_are_still_finalised(month_end, operator):
    with all_tenants("test"):
        ready = list(inv.ready_drafts())
    # Another operator finalises Alpha's between the list being read and the button being pressed.
    inv.finalise_invoice(operator, month_end["alpha_last"])
    finalised, failed = inv.finalise_drafts(operator, ready)
    assert [inv.invoice_number(i) for i in finalised] == [inv.invoice_number(month_end["bravo_last"])]
    assert failed == [(inv.invoice_number(month_end["alpha_last"]), "This invoice is already final.")]
    assert statuses()[("bravo", LAST_MONTH)] == InvoiceStatus.FINAL
    assert finalised_audits() == 2


def test_finalise_all_never_touches_the_running_month(world, operator, client):
    inv.draft_invoice(world.a.tenant, THIS_MONTH)
    client.force_login(operator)
    assert parse(client.get(INVOICES).content).find_all("form", action=FINALISE_READY) == []
    response = client.post(FINALISE_READY, follow=True)
    assert "No drafts are ready to finalise." in response.content.decode()
    assert statuses() == {("alpha", THIS_MONTH): InvoiceStatus.DRAFT}
    assert finalised_audits() == 0


def test_finalise_all_is_a_post_for_operators_only(month_end, world, client):
    client.force_login(world.a.owner)
    assert client.post(FINALISE_READY).status_code == 404
    assert statuses()[("alpha", LAST_MONTH)] == InvoiceStatus.DRAFT

"""Embedding events (billing.metering.record_embedding) in everything that sums usage: they are
the provider's cost attributed to the tenant, never turns and never the plan's tokens."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command

from billing import dashboards, load
from billing.accounting import month_start
from billing.invoices import draft_invoice
from billing.metering import document_embedding_key, record_embedding
from billing.models import ModelPrice, PriceBook, UsageEvent, UsageKind
from tenants.context import all_tenants, tenant_context
from tests.billing.helpers import ask_and_run

pytestmark = pytest.mark.django_db

MODEL = "text-embedding-test"
EMBEDDED_TOKENS = 500
EMBEDDING_COST = Decimal("0.01")  # 500 tokens at $0.02 per 1k


@pytest.fixture
def used(world, catalogue, runtime):
    """One turn and one document's embedding (recorded twice: a redelivered ingestion)."""
    book = PriceBook.objects.create(version=1, effective_from="2000-01-01T00:00:00Z")
    ModelPrice.objects.create(price_book=book, model_key=MODEL, per_1k_input=Decimal("0.02"))
    ask_and_run(world.a, catalogue.helpdesk)
    key = document_embedding_key(world.a.tenant.pk, 1, 1)
    with tenant_context(world.a.tenant):
        for _delivery in range(2):
            record_embedding(
                world.a.tenant.pk, key=key, model_key=MODEL, tokens=EMBEDDED_TOKENS, estimated=False, user_id=None
            )
        turn = UsageEvent.objects.get(kind=UsageKind.AGENT_TURN)
    return turn


def test_reconcile_finds_the_roll_ups_month_counters_and_invoice_agree(world, used):
    with tenant_context(world.a.tenant):
        draft_invoice(world.a.tenant, month_start())
    out = StringIO()

    call_command("reconcile_usage", "--tenant", world.a.tenant.slug, stdout=out, stderr=StringIO())

    assert "difference" not in out.getvalue().lower()


def test_the_tenants_usage_counts_the_turn_and_shows_the_embedding_tokens_apart(world, used):
    with tenant_context(world.a.tenant):
        totals = dashboards.totals(dashboards.parse_window({}))

    assert totals.as_dict()["turns"] == 1
    assert totals.as_dict()["tokens"] == used.input_tokens + used.output_tokens
    assert totals.as_dict()["embedding_tokens"] == EMBEDDED_TOKENS
    assert totals.cost == used.cost + EMBEDDING_COST


def test_the_operator_sees_the_embedding_cost_but_bills_only_the_plans_tokens(world, used):
    month = month_start()
    with tenant_context(world.a.tenant):
        row = dashboards.operator_row(world.a.tenant, month)
        invoice = draft_invoice(world.a.tenant, month)

    assert (row.turns, row.tokens) == (1, used.input_tokens + used.output_tokens)
    assert row.cost == used.cost + EMBEDDING_COST
    assert invoice.tokens == used.input_tokens + used.output_tokens


def test_the_load_page_counts_turns_and_model_tokens_not_embeddings(world, used):
    with all_tenants("test"):
        result = load.tenant_load(load.load_window("hour"), [world.a.tenant])
    [row] = result.shared + result.dedicated

    assert (row.turns, row.input_tokens) == (1, used.input_tokens)


def test_the_events_page_labels_an_embedding_event(client, world, used):
    client.force_login(world.a.admin)

    page = client.get("/t/alpha/billing/events/").content.decode()

    assert "Embedding</span>" in page

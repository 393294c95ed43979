"""The operator's audit log exports as CSV as a tenant's does (tests/tenants/test_audit_export.py):
exactly what the filters select, across every tenant and the platform's own entries, streamed,
safe to open in a spreadsheet, dates in ISO 8601 UTC, and the export recorded in the platform's
audit log. Operators only: anyone else gets the console's 404."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient

from tenants import audit
from tenants.context import all_tenants
from tenants.models import AuditLog
from tests.tenants.helpers import platform_audit_entries

pytestmark = pytest.mark.django_db

EXPORT = "/operator/audit/export.csv"
HEADER = [
    "id",
    "created_at",
    "tenant",
    "actor_email",
    "ip_address",
    "action",
    "target_type",
    "target_id",
    "target",
    "before",
    "after",
    "action_label",
]


def entry(tenant, action: str, *, actor_email: str = "someone@example.test", when=None, **fields) -> AuditLog:
    """One audit entry of `tenant` (None: the platform's own), at `when` (default now)."""
    with all_tenants("test: write audit entries"):
        row = AuditLog(tenant=tenant, actor_email=actor_email, action=action, **fields)
        if when is not None:
            row.created_at = when
        row.save(force_insert=True)
    return row


def read_csv(response) -> list[list[str]]:
    assert response.status_code == 200, response.content[:500]
    assert response.streaming, "the export is streamed, not built in memory"
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="platform-audit-log-')
    assert response["Cache-Control"] == "no-store"
    body = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(body, newline="")))


@pytest.mark.parametrize("role", ["owner", "admin", "member", "billing"])
def test_it_is_for_operators_only(client, world, role):
    client.force_login(world.a.user(role))
    assert client.get(EXPORT).status_code == 404


def test_it_sends_someone_signed_out_to_sign_in(client):
    response = client.get(EXPORT)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


def test_it_exports_every_tenants_entries_and_the_platforms_with_whose_they_are(client, world, operator):
    alpha = entry(world.a.tenant, "membership.role_changed", target_repr="member@alpha.test", before={"role": "x"})
    bravo = entry(world.b.tenant, "invitation.sent", target_repr="new@bravo.test")
    platform = entry(None, "tier.updated", target_repr="Premium")
    client.force_login(operator)

    rows = read_csv(client.get(EXPORT))

    assert rows[0] == HEADER
    by_id = {int(r[0]): r for r in rows[1:]}
    assert set(by_id) == {alpha.pk, bravo.pk, platform.pk}
    assert by_id[alpha.pk][2:4] == ["alpha", "someone@example.test"]
    assert json.loads(by_id[alpha.pk][9]) == {"role": "x"}
    assert by_id[bravo.pk][2] == "bravo"
    assert by_id[platform.pk][2] == ""  # the platform's own entry
    assert by_id[platform.pk][8] == "Premium"


def test_it_exports_exactly_what_the_filters_select(client, world, operator):
    day = dt.datetime(2026, 3, 14, 9, 30, 5, tzinfo=dt.UTC)
    kept = entry(world.b.tenant, "invitation.sent", actor_email="admin@bravo.test", when=day)
    entry(world.a.tenant, "invitation.sent", actor_email="admin@bravo.test", when=day)  # another tenant
    entry(world.b.tenant, "invitation.sent", actor_email="owner@bravo.test", when=day)  # another actor
    entry(world.b.tenant, "membership.removed", actor_email="admin@bravo.test", when=day)  # another action
    entry(world.b.tenant, "invitation.sent", actor_email="admin@bravo.test", when=day + dt.timedelta(days=1))
    client.force_login(operator)
    filters = {"tenant": "bravo", "action": "invitation", "actor": "admin@", "since": "2026-03-14"}
    filters["until"] = "2026-03-14"

    page = client.get("/operator/audit/", filters)
    rows = read_csv(client.get(EXPORT, filters))

    assert [e.pk for e in page.context["page"]] == [kept.pk]
    assert [int(r[0]) for r in rows[1:]] == [kept.pk]
    assert rows[1][1] == "2026-03-14T09:30:05Z"  # ISO 8601, UTC


def test_it_neutralises_cells_a_spreadsheet_would_run_as_formulas(client, world, operator):
    formulas = ['=HYPERLINK("http://evil.test","x")', "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1"]
    for text in [*formulas, "plain"]:
        entry(world.a.tenant, "membership.role_changed", target_repr=text)
    client.force_login(operator)

    rows = read_csv(client.get(EXPORT))

    assert sorted(r[8] for r in rows[1:]) == sorted(["'" + text for text in formulas] + ["plain"])


def test_it_records_the_export_in_the_platforms_audit_log_with_its_filters_and_row_count(client, world, operator):
    entry(world.a.tenant, "invitation.sent")
    entry(world.b.tenant, "invitation.sent")
    entry(world.b.tenant, "membership.removed")
    client.force_login(operator)

    rows = read_csv(client.get(EXPORT, {"action": "invitation", "page": "2"}))

    [exported] = platform_audit_entries(audit.EXPORTED)
    assert exported.tenant is None  # the platform's log, which only operators read
    assert exported.actor == operator
    assert exported.after == {"format": "csv", "rows": 2, "filters": {"action": "invitation"}}
    assert exported.ip_address == "127.0.0.1"
    assert len(rows) == 3  # the header and the two entries: not the export's own record


def test_it_streams_a_large_log_in_batches_without_losing_or_repeating_a_row(client, world, operator, monkeypatch):
    monkeypatch.setattr(audit, "EXPORT_BATCH", 3)
    same_second = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    # Ties on created_at across a batch boundary, and across tenants: the keyset also orders by id.
    ids = [entry((world.a, world.b)[n % 2].tenant, f"test.n{n}", when=same_second).pk for n in range(7)]
    client.force_login(operator)

    response = client.get(EXPORT)
    chunks = list(response.streaming_content)
    rows = list(csv.reader(io.StringIO(b"".join(chunks).decode(), newline="")))

    assert len(chunks) >= 4  # the header, then batches of 3
    assert [int(r[0]) for r in rows[1:]] == sorted(ids, reverse=True)


def test_it_streams_asynchronously_under_asgi_reading_across_tenants_for_each_batch(world, operator, monkeypatch):
    monkeypatch.setattr(audit, "EXPORT_BATCH", 2)
    ids = [entry(side.tenant, "invitation.sent").pk for side in (world.a, world.b, world.a, world.b, world.a)]
    client = AsyncClient()
    client.force_login(operator)

    async def fetch():
        response = await client.get(EXPORT)
        assert response.is_async  # an async iterator: served as it is read, not collected first
        return response, b"".join([chunk async for chunk in response.streaming_content])

    response, body = async_to_sync(fetch)()

    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(body.decode(), newline="")))
    assert sorted(int(r[0]) for r in rows[1:]) == sorted(ids)


def test_it_explains_a_bad_filter_instead_of_exporting_everything(client, world, operator):
    entry(world.a.tenant, "invitation.sent")
    client.force_login(operator)

    response = client.get(EXPORT, {"until": "31/31/2026"})

    assert response.status_code == 400
    assert b"Enter a valid date." in response.content
    assert platform_audit_entries(audit.EXPORTED) == []


def test_it_offers_the_export_on_the_audit_log_with_the_current_filters(client, operator):
    client.force_login(operator)

    body = client.get("/operator/audit/", {"tenant": "bravo", "action": "invitation", "page": "1"}).content.decode()

    assert 'href="/operator/audit/export.csv?action=invitation&amp;tenant=bravo"' in body
    assert "Export CSV" in body

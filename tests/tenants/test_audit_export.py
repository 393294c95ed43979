"""Exporting the tenant's audit log as CSV: exactly what the filters select, streamed,
tenant-scoped, for the roles that may read the log of a tenant whose plan includes the
export (audit_export), safe to open in a spreadsheet, dates in ISO 8601 UTC, and the
export itself recorded in the log (audit.exported)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient

from tenants import audit
from tenants.context import tenant_context
from tenants.models import AuditLog
from tests.tenants.helpers import audit_entries, page_text

EXPORT = "/t/alpha/audit/export.csv"
HEADER = [
    "id",
    "created_at",
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


@pytest.fixture(autouse=True)
def _alpha_may_export(world):
    """Alpha's plan lacks the export, as most do; the operator granted it (Bravo: not)."""
    grant(world.a.tenant, "audit_export")


def grant(tenant, feature: str) -> None:
    tenant.feature_grants = sorted({*tenant.feature_grants, feature})
    tenant.save(update_fields=["feature_grants"])


def entry(side, action: str, *, actor=None, when: dt.datetime | None = None, **fields) -> AuditLog:
    """One audit entry of `side`'s tenant, as audit.record() writes it, at `when` (default now)."""
    actor = actor or side.owner
    with tenant_context(side.tenant):
        row = AuditLog(tenant=side.tenant, actor=actor, actor_email=actor.email, action=action, **fields)
        if when is not None:
            row.created_at = when
        row.save(force_insert=True)
    return row


def read_csv(response) -> list[list[str]]:
    assert response.status_code == 200, response.content[:500]
    assert response.streaming, "the export is streamed, not built in memory"
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="alpha-audit-log-')
    body = b"".join(response.streaming_content).decode()
    return list(csv.reader(io.StringIO(body)))


@pytest.mark.parametrize(("role", "status"), [("owner", 200), ("admin", 200), ("billing", 403), ("member", 403)])
def test_it_lets_only_the_roles_that_read_the_audit_log_export_it(client, world, role, status):
    client.force_login(world.a.user(role))
    assert client.get(EXPORT).status_code == status


def test_it_answers_404_to_someone_of_another_tenant(client, world):
    client.force_login(world.b.owner)
    assert client.get(EXPORT).status_code == 404


def test_it_exports_every_entry_of_the_tenant_and_none_of_another(client, world):
    mine = entry(world.a, "membership.role_changed", target_repr="member@alpha.test", before={"role": "member"})
    entry(world.b, "membership.role_changed", target_repr="secret@bravo.test")
    client.force_login(world.a.admin)

    rows = read_csv(client.get(EXPORT))

    assert rows[0] == HEADER
    assert [r[0] for r in rows[1:]] == [str(mine.pk)]
    assert rows[1][2:8] == ["owner@alpha.test", "", "membership.role_changed", "", "", "member@alpha.test"]
    assert json.loads(rows[1][8]) == {"role": "member"}
    assert rows[1][9] == ""


def test_it_exports_exactly_what_the_filters_select(client, world):
    day = dt.datetime(2026, 3, 14, 9, 30, 5, tzinfo=dt.UTC)
    kept = entry(world.a, "invitation.sent", actor=world.a.admin, when=day)
    entry(world.a, "invitation.sent", actor=world.a.owner, when=day)  # another actor
    entry(world.a, "membership.removed", actor=world.a.admin, when=day)  # another action
    entry(world.a, "invitation.sent", actor=world.a.admin, when=day + dt.timedelta(days=2))  # after `until`
    client.force_login(world.a.owner)
    filters = {"action": "invitation", "actor": "admin@", "since": "2026-03-14", "until": "2026-03-14"}

    page = client.get("/t/alpha/audit/", filters)
    rows = read_csv(client.get(EXPORT, filters))

    assert [e.pk for e in page.context["page"]] == [kept.pk]
    assert [r[0] for r in rows[1:]] == [str(kept.pk)]
    assert rows[1][1] == "2026-03-14T09:30:05Z"  # ISO 8601, UTC


def test_it_neutralises_cells_a_spreadsheet_would_run_as_formulas(client, world):
    formulas = ['=HYPERLINK("http://evil.test","x")', "+1+1", "-2+3", "@SUM(A1)", "\t=1"]
    for text in [*formulas, "plain"]:
        entry(world.a, "membership.role_changed", target_repr=text)
    client.force_login(world.a.owner)

    rows = read_csv(client.get(EXPORT))

    targets = sorted(r[7] for r in rows[1:])
    assert targets == sorted(["'" + text for text in formulas] + ["plain"])


def test_it_records_the_export_in_the_audit_log_with_its_filters_and_row_count(client, world):
    entry(world.a, "invitation.sent")
    entry(world.a, "membership.removed")
    client.force_login(world.a.admin)

    rows = read_csv(client.get(EXPORT, {"action": "invitation", "page": "2"}))

    [exported] = audit_entries(world.a.tenant, "audit.exported")
    assert exported.actor == world.a.admin
    assert exported.after == {"format": "csv", "rows": 1, "filters": {"action": "invitation"}}
    assert exported.ip_address == "127.0.0.1"
    assert len(rows) == 2  # the header and the one entry: the export's own record is not in its file
    assert audit_entries(world.b.tenant, "audit.exported") == []


def test_it_streams_a_large_log_in_batches_without_losing_or_repeating_a_row(client, world, monkeypatch):
    monkeypatch.setattr(audit, "EXPORT_BATCH", 3)
    same_second = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    # Ties on created_at across a batch boundary: the keyset must also order by id.
    ids = [entry(world.a, f"test.n{n}", when=same_second).pk for n in range(7)]
    ids += [entry(world.a, "test.later", when=same_second + dt.timedelta(hours=1)).pk]
    client.force_login(world.a.owner)

    response = client.get(EXPORT)
    chunks = list(response.streaming_content)
    rows = list(csv.reader(io.StringIO(b"".join(chunks).decode())))

    assert len(chunks) >= 4  # the header, then batches of 3
    assert [int(r[0]) for r in rows[1:]] == [ids[-1], *sorted(ids[:-1], reverse=True)]


def test_it_streams_asynchronously_under_asgi_with_the_tenant_set_for_each_batch(world, monkeypatch):
    monkeypatch.setattr(audit, "EXPORT_BATCH", 2)
    ids = [entry(world.a, "invitation.sent").pk for _ in range(5)]
    entry(world.b, "invitation.sent", target_repr="secret@bravo.test")
    client = AsyncClient()
    client.force_login(world.a.owner)

    async def fetch():
        response = await client.get(EXPORT)
        assert response.is_async  # an async iterator: served as it is read, not collected first
        return response, b"".join([chunk async for chunk in response.streaming_content])

    response, body = async_to_sync(fetch)()

    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(body.decode())))
    assert sorted(int(r[0]) for r in rows[1:]) == sorted(ids)
    assert b"bravo" not in body


def test_it_explains_a_bad_filter_instead_of_exporting_everything(client, world):
    entry(world.a, "invitation.sent")
    client.force_login(world.a.owner)

    response = client.get(EXPORT, {"since": "not-a-date"})

    assert response.status_code == 400
    assert b"Enter a valid date." in response.content
    assert audit_entries(world.a.tenant, "audit.exported") == []


def test_it_offers_the_export_on_the_audit_log_with_the_current_filters(client, world):
    client.force_login(world.a.admin)

    body = client.get("/t/alpha/audit/", {"action": "invitation", "page": "1"}).content.decode()

    assert 'href="/t/alpha/audit/export.csv?action=invitation"' in body
    assert "Export CSV" in body


def test_the_audit_log_shows_a_nested_change_as_json_not_as_python(client, world):
    entry(world.a, "audit.exported", after={"filters": {"action": "invitation"}, "rows": 2, "note": None})
    client.force_login(world.a.owner)

    body = page_text(client.get("/t/alpha/audit/"))

    assert "{&quot;action&quot;: &quot;invitation&quot;}" in body
    assert "{&#x27;action&#x27;" not in body
    assert '<span class="json-key">note</span>: null' in body


# --- only where the plan includes it ------------------------------------------------------------


def test_it_refuses_the_export_with_the_reason_when_the_plan_lacks_it(client, world):
    entry(world.b, "invitation.sent")
    client.force_login(world.b.owner)

    response = client.get("/t/bravo/audit/export.csv")

    assert response.status_code == 403
    assert not response.streaming
    body = response.content.decode()
    assert "Exporting the audit log is not part of the Standard-Test plan" in body
    assert "<code>audit_export</code>" in body
    assert 'href="/t/bravo/"' in body  # where the plan's features are listed
    assert audit_entries(world.b.tenant, "audit.exported") == []


def test_it_refuses_the_export_when_the_operator_revoked_it(client, world):
    world.a.tenant.feature_revocations = ["audit_export"]
    world.a.tenant.save(update_fields=["feature_revocations"])
    client.force_login(world.a.owner)

    assert client.get(EXPORT).status_code == 403
    assert audit_entries(world.a.tenant, "audit.exported") == []


def test_it_exports_where_the_tier_includes_it(client, world):
    tier = world.b.tenant.tier
    tier.default_features = [*tier.default_features, "audit_export"]
    tier.save(update_fields=["default_features"])
    client.force_login(world.b.admin)

    response = client.get("/t/bravo/audit/export.csv")

    assert response.status_code == 200 and response.streaming


def test_a_role_without_the_log_is_refused_before_the_plan_is_mentioned(client, world):
    client.force_login(world.b.member)

    response = client.get("/t/bravo/audit/export.csv")

    assert response.status_code == 403
    assert b"audit_export" not in response.content


def test_the_audit_log_offers_no_export_button_but_says_how_to_get_it_when_the_plan_lacks_it(client, world):
    client.force_login(world.b.owner)

    body = client.get("/t/bravo/audit/").content.decode()

    assert 'id="audit-export"' not in body
    assert "/audit/export.csv" not in body
    assert 'id="audit-export-not-in-plan"' in body
    assert "Exporting the audit log is not part of the Standard-Test plan." in body


def test_the_service_refuses_an_export_the_plan_lacks(world):
    from django.core.exceptions import PermissionDenied

    from tenants import services
    from tenants.context import tenant_context

    actor = services.Actor(user=world.b.owner, membership=world.b.memberships["owner"])
    with tenant_context(world.b.tenant), pytest.raises(PermissionDenied):
        services.export_audit_log(actor, AuditLog.objects.all(), filters={})

"""Every action the code base records in the audit log has a name for people (audit.ACTION_LABELS),
shown on the audit pages with the code beside it, and written to the CSV export next to the code.

The codes are collected from the source: every `audit.record(...)` call's first argument, a
literal, a conditional between literals, a module constant, or a local variable assigned those
(or a dict's values). A new action without a label, or one written in a way this scan cannot
read (an f-string), fails here."""

from __future__ import annotations

import ast
import csv
import importlib
import io
from pathlib import Path

import pytest

from tenants import audit
from tenants.context import all_tenants, tenant_context
from tenants.models import AuditLog
from tests.tenants.helpers import page_text

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("agents", "billing", "portal", "tenants")


class Unreadable(Exception):
    pass


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _codes(node: ast.expr, *, function: ast.AST | None, module: str) -> set[str]:
    """The action codes an expression can evaluate to."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _codes(node.body, function=function, module=module) | _codes(
            node.orelse, function=function, module=module
        )
    if isinstance(node, ast.Dict):
        return set().union(*(_codes(v, function=function, module=module) for v in node.values))
    if (  # {...}.get(key, default) / mapping.get(key, default)
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and len(node.args) == 2
    ):
        return _codes(node.func.value, function=function, module=module) | _codes(
            node.args[1], function=function, module=module
        )
    if isinstance(node, ast.Name) and function is not None:
        assigned = [
            a.value
            for a in ast.walk(function)
            if isinstance(a, ast.Assign) and any(isinstance(t, ast.Name) and t.id == node.id for t in a.targets)
        ]
        if assigned:
            return set().union(*(_codes(v, function=function, module=module) for v in assigned))
    if isinstance(node, ast.Name | ast.Attribute):  # a module constant (READ_ACTION, audit.EXPORTED)
        target = importlib.import_module(module)
        for part in ast.unparse(node).split("."):
            target = getattr(target, part, None)
        if isinstance(target, str):
            return {target}
    raise Unreadable(ast.unparse(node))


def recorded_actions() -> dict[str, list[str]]:
    """Each action code the source records, with the places that record it."""
    found: dict[str, list[str]] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            tree = ast.parse(path.read_text(), filename=str(path))
            functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
            for call in ast.walk(tree):
                if not (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Attribute)
                    and call.func.attr == "record"
                    and isinstance(call.func.value, ast.Name)
                    and call.func.value.id == "audit"
                ):
                    continue
                where = f"{path.relative_to(ROOT)}:{call.lineno}"
                enclosing = [f for f in functions if f.lineno <= call.lineno <= (f.end_lineno or f.lineno)]
                function = max(enclosing, key=lambda f: f.lineno) if enclosing else None
                try:
                    codes = _codes(call.args[0], function=function, module=_module_name(path))
                except Unreadable as unreadable:
                    pytest.fail(f"{where}: write the action code so it can be read: {unreadable}")
                for code in codes:
                    found.setdefault(code, []).append(where)
    return found


def test_the_scan_finds_the_recorded_actions():
    actions = recorded_actions()
    # one of each way of writing it: a literal, a conditional, a constant, a local variable
    assert {"api_client.created", "sso.created", "sso.updated", "audit.exported", "operator.viewed"} <= set(actions)
    assert {"tenant.tier_changed", "tenant.updated", "knowledge.document_replaced"} <= set(actions)
    assert len(actions) > 40


def test_every_action_the_code_records_has_a_label():
    unlabelled = {code: where for code, where in recorded_actions().items() if code not in audit.ACTION_LABELS}
    assert unlabelled == {}, "add these to tenants.audit.ACTION_LABELS"


def test_no_label_is_left_for_an_action_the_code_no_longer_records():
    assert set(audit.ACTION_LABELS) - set(recorded_actions()) == set()


def test_labels_are_unique_and_not_codes():
    labels = list(audit.ACTION_LABELS.values())
    assert len(set(labels)) == len(labels)
    assert all("." not in label and "_" not in label for label in labels)


# --- the pages and the export show them ---------------------------------------------------------


def _entry(tenant, action: str) -> AuditLog:
    with all_tenants("test: write audit entries"):
        row = AuditLog(tenant=tenant, actor_email="owner@alpha.test", action=action)
        row.save(force_insert=True)
    return row


@pytest.mark.django_db
def test_the_tenants_and_the_operators_audit_pages_name_the_action_and_keep_the_code(client, world, operator):
    _entry(world.a.tenant, "api_client.taken_over")
    client.force_login(world.a.owner)
    tenant_page = page_text(client.get("/t/alpha/audit/"))
    client.force_login(operator)
    operator_page = page_text(client.get("/operator/audit/"))
    tenant_detail = page_text(client.get("/operator/tenants/alpha/"))

    for page in (tenant_page, operator_page, tenant_detail):
        assert "API client taken over" in page
        assert '<code class="action small">api_client.taken_over</code>' in page


@pytest.mark.django_db
def test_an_unknown_code_is_shown_as_it_is(client, world):
    _entry(world.a.tenant, "legacy.thing_done")
    client.force_login(world.a.owner)
    assert "legacy.thing_done" in page_text(client.get("/t/alpha/audit/"))


@pytest.mark.django_db
def test_the_filter_finds_an_action_by_its_label_or_its_code(client, world):
    _entry(world.a.tenant, "api_client.taken_over")
    _entry(world.a.tenant, "membership.removed")
    client.force_login(world.a.owner)

    by_label = page_text(client.get("/t/alpha/audit/", {"action": "taken over"}))
    by_code = page_text(client.get("/t/alpha/audit/", {"action": "api_client"}))

    for page in (by_label, by_code):
        assert "api_client.taken_over" in page and "membership.removed" not in page


@pytest.mark.django_db
def test_the_csv_exports_carry_the_label_next_to_the_code(client, world, operator):
    world.a.tenant.feature_grants = ["audit_export"]
    world.a.tenant.save(update_fields=["feature_grants"])
    _entry(world.a.tenant, "api_client.paused")

    def rows(url):
        response = client.get(url)
        assert response.status_code == 200
        return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))

    client.force_login(world.a.owner)
    [tenant_row] = [r for r in rows("/t/alpha/audit/export.csv") if r["action"] == "api_client.paused"]
    client.force_login(operator)
    [platform_row] = [r for r in rows("/operator/audit/export.csv") if r["action"] == "api_client.paused"]

    for row in (tenant_row, platform_row):
        assert row["action_label"] == "API clients paused (owner lost access)"
    with tenant_context(world.a.tenant):
        assert AuditLog.objects.filter(action="api_client.paused").count() == 1

"""The built-in handlers: safe arithmetic, the time in a zone, the tenant's usage."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from agents.tools import handlers
from agents.tools.handlers import Call, ToolFailed, calculate
from tenants.context import tenant_context
from tests.billing.usage_helpers import record_usage


@pytest.mark.parametrize(
    "expression, value",
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("7 / 2", 3.5),
        ("7 // 2", 3),
        ("7 % 4", 3),
        ("2 ** 10", 1024),
        ("2 ^ 10", 1024),
        ("-3 + +4", 1),
        ("0.1 + 0.2", 0.3),
        ("10 / 4 * 2", 5),
        ("2 ** -1", 0.5),
    ],
)
def test_the_calculator_computes(expression, value):
    assert calculate(expression) == value


@pytest.mark.parametrize(
    "expression, reason",
    [
        ("", "Give an arithmetic expression"),
        ("__import__('os').system('id')", "Only numbers"),
        ("open('/etc/passwd')", "Only numbers"),
        ("x + 1", "Only numbers"),
        ("'a' * 3", "Only numbers"),
        ("[1] * 3", "Only numbers"),
        ("1 if 1 else 2", "Only numbers"),
        ("True + 1", "Only numbers"),
        ("1 +", "not an arithmetic expression"),
        ("1 / 0", "Division by zero"),
        ("1 % 0", "Division by zero"),
        ("0 ** -1", "Zero cannot"),
        ("9 ** 9 ** 9", "Exponents are limited"),
        ("2 ** 101", "Exponents are limited"),
        ("10 ** 99 * 10 ** 99", "too large"),
        ("1e308 * 10", "too large"),
        ("(-8) ** 0.5", "not a real number"),
        ("1" * 201, "longer than 200"),
        ("+".join(["1"] * 60), "too long"),
    ],
)
def test_the_calculator_refuses_what_it_should_not_compute(expression, reason):
    with pytest.raises(ToolFailed, match=reason):
        calculate(expression)


def test_current_time_in_a_zone(world):
    call = Call(tenant=world.a.tenant, user_id=world.a.member.pk, roles=("member",))
    result = handlers.current_time({"timezone": "Asia/Kolkata"}, call)
    assert result["timezone"] == "Asia/Kolkata" and result["utc_offset"] == "+0530"
    moment = dt.datetime.fromisoformat(result["iso"])
    assert abs((moment - timezone.now()).total_seconds()) < 3600  # the same moment, in that zone
    assert handlers.current_time({}, call)["timezone"] == "UTC"


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../../etc/passwd", "", "Europe/"])
def test_current_time_refuses_an_unknown_zone(world, zone):
    call = Call(tenant=world.a.tenant, user_id=world.a.member.pk, roles=("member",))
    if zone == "":
        assert handlers.current_time({"timezone": zone}, call)["timezone"] == "UTC"
        return
    with pytest.raises(ToolFailed, match="Unknown time zone"):
        handlers.current_time({"timezone": zone}, call)


@pytest.mark.parametrize("role, allowed", [("owner", True), ("admin", True), ("billing", True), ("member", False)])
def test_usage_needs_a_role_that_sees_billing(world, role, allowed):
    record_usage(world.a.tenant, timezone.now(), input_tokens=300, output_tokens=200)
    call = Call(tenant=world.a.tenant, user_id=world.a.user(role).pk, roles=(role,))
    with tenant_context(world.a.tenant):
        if not allowed:
            with pytest.raises(ToolFailed) as refused:
                handlers.usage_this_month({}, call)
            assert refused.value.status == 403
            return
        result = handlers.usage_this_month({}, call)
    assert (result["input_tokens"], result["output_tokens"], result["tokens"], result["turns"]) == (300, 200, 500, 1)
    assert result["month"] == timezone.now().strftime("%Y-%m")

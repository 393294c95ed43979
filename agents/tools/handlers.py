"""The built-in tool handlers the portal's tool gateway runs.

Each handler takes the validated input (a dict the tool's JSON Schema accepted)
and a :class:`Call` (the tenant and the acting user's roles, both from the
act-on-behalf token, never from the input) and returns a JSON-able dict, or
raises :class:`ToolFailed` with a reason the model may read.

* ``calculator``: arithmetic on numbers with ``+ - * / // % **`` and brackets,
  evaluated by walking the ``ast`` of the expression (never ``eval``), with
  limits on its length, its number of nodes, the size of exponents and of every
  intermediate result, so no input can make it compute for long.
* ``current_time``: the time now in an IANA zone (``zoneinfo``).
* ``usage_this_month``: the token tenant's own tokens and bill this month, only
  when the user the agent acts for may see billing (owner, admin, billing): the
  agent can do no more than the user.
"""

from __future__ import annotations

import ast
import datetime as dt
import math
import operator
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass

from django.utils import timezone

from tenants.models import Tenant
from tenants.roles import Action, can


class ToolFailed(Exception):
    """The tool ran but refused or could not do what was asked (bad expression, unknown zone)."""

    def __init__(self, detail: str, *, status: int = 400):
        super().__init__(detail)
        self.detail = detail
        self.status = status


@dataclass(frozen=True)
class Call:
    tenant: Tenant
    user_id: int
    roles: tuple[str, ...]


# --- calculator ------------------------------------------------------------------------------

MAX_EXPRESSION_CHARS = 200
MAX_NODES = 100
MAX_EXPONENT = 100
MAX_MAGNITUDE = 10**100

_BINARY: dict[type, Callable] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable] = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def _bounded(value):
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolFailed("The result is not a finite number.")
    if abs(value) > MAX_MAGNITUDE:
        raise ToolFailed("The result is too large (limit 1e100).")
    return value


def _evaluate(node):
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _bounded(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ToolFailed(f"Exponents are limited to ±{MAX_EXPONENT}.")
        if isinstance(node.op, ast.Pow) and left == 0 and right < 0:
            raise ToolFailed("Zero cannot be raised to a negative power.")
        try:
            result = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ToolFailed("Division by zero.")
        except OverflowError:
            raise ToolFailed("The result is too large (limit 1e100).")
        if isinstance(result, complex):
            raise ToolFailed("The result is not a real number.")
        return _bounded(result)
    raise ToolFailed("Only numbers, + - * / // % ** and brackets are allowed.")


def calculate(expression: str):
    expression = expression.strip()
    if not expression:
        raise ToolFailed("Give an arithmetic expression.")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolFailed(f"The expression is longer than {MAX_EXPRESSION_CHARS} characters.")
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except (SyntaxError, ValueError):
        raise ToolFailed("That is not an arithmetic expression.")
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise ToolFailed("The expression is too long.")
    result = _evaluate(tree)
    if isinstance(result, float) and result.is_integer() and abs(result) < 2**53:
        result = int(result)
    elif isinstance(result, float):
        result = round(result, 10)
    return result


def calculator(data: dict, call: Call) -> dict:
    expression = data["expression"]
    return {"expression": expression, "value": calculate(expression)}


# --- current time ----------------------------------------------------------------------------


def current_time(data: dict, call: Call) -> dict:
    name = data.get("timezone") or "UTC"
    try:
        zone = zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ToolFailed(f"Unknown time zone {name!r}: give an IANA name such as Europe/Paris.")
    now = timezone.now().astimezone(zone)
    return {
        "timezone": name,
        "iso": now.isoformat(timespec="seconds"),
        "date": now.date().isoformat(),
        "time": now.strftime("%H:%M"),
        "weekday": now.strftime("%A"),
        "utc_offset": now.strftime("%z"),
    }


# --- usage this month ------------------------------------------------------------------------


def usage_this_month(data: dict, call: Call) -> dict:
    """Needs the tenant in the context (the gateway sets the token's)."""
    if not any(can(role, Action.VIEW_BILLING) for role in call.roles):
        raise ToolFailed(
            "Only an owner, admin or billing member may see the organisation's usage; "
            "the agent acts for you and can do no more than you.",
            status=403,
        )
    from billing.dashboards import month_outlook

    outlook = month_outlook(call.tenant, now=timezone.now())
    totals = outlook.month_totals
    return {
        "month": outlook.month.strftime("%Y-%m"),
        "turns": totals.turns,
        "input_tokens": totals.input_tokens,
        "output_tokens": totals.output_tokens,
        "tokens": totals.tokens,
        "included_tokens": outlook.included_tokens,
        "bill_so_far": str(outlook.bill.total),
        "currency": "USD",  # invoices' currency (billing.models.Invoice.currency)
        "as_of": timezone.now().astimezone(dt.UTC).isoformat(timespec="seconds"),
    }


HANDLERS: dict[str, Callable[[dict, Call], dict]] = {
    "calculator": calculator,
    "current_time": current_time,
    "usage_this_month": usage_this_month,
}
# Handlers that touch no database: run in a worker thread under the time limit. The
# others run in the request's thread (its database connection and transaction), under
# the same limit as a database one (services.database_time_limit: statement_timeout on
# PostgreSQL, a progress handler on SQLite), and read roll-ups, never raw events.
PURE = frozenset({"calculator", "current_time"})

# What each handler's tool takes, for the registry's defaults and the seed.
SCHEMAS: dict[str, dict] = {
    "calculator": {
        "type": "object",
        "properties": {
            "expression": {
                "type": "string",
                "maxLength": MAX_EXPRESSION_CHARS,
                "description": "An arithmetic expression, e.g. (12.5 * 4) / 3",
            }
        },
        "required": ["expression"],
        "additionalProperties": False,
    },
    "current_time": {
        "type": "object",
        "properties": {
            "timezone": {"type": "string", "maxLength": 64, "description": "IANA time zone, e.g. Europe/Paris"}
        },
        "additionalProperties": False,
    },
    "usage_this_month": {"type": "object", "properties": {}, "additionalProperties": False},
}

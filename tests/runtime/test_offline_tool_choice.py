"""When the offline model calls the calculator: only for arithmetic the member asks for.

The rule (agents/runtime/models/offline.py, ``choose_tool``): the prompt holds an
expression with an arithmetic operator between numbers AND asks for a result (calculate,
compute, evaluate, solve, work out, what is, how much/many, equals, "=") or is nothing but
the expression. A hyphen squeezed between digits (555-1234, 2026-12-04, 10-20) joins them
rather than subtracts, so phone numbers, dates, ranges and ids never look like sums.
"""

from __future__ import annotations

import pytest

from agents.runtime.contract import ToolCall
from agents.runtime.models.offline import choose_tool

OFFERED = {"calculator", "current_time", "usage_this_month"}


def calculator(expression: str) -> ToolCall:
    return ToolCall(name="calculator", input={"expression": expression}, id="call_1")


@pytest.mark.parametrize(
    "prompt, expression",
    [
        ("What is 12 * (3 + 4)?", "12 * (3 + 4)"),
        ("What is 2 ** 10 - 24?", "2 ** 10 - 24"),
        ("Calculate 1500 / 12 please", "1500 / 12"),
        ("how much is 19.99 * 3", "19.99 * 3"),
        ("what's 100 - 7", "100 - 7"),
        ("12*7", "12*7"),
        ("12 * 7 = ?", "12 * 7"),
        ("Can you work out (4 + 5) * 2 for me?", "(4 + 5) * 2"),
    ],
)
def test_it_calls_the_calculator_for_arithmetic_the_member_asks_for(prompt, expression):
    assert choose_tool(prompt, OFFERED) == calculator(expression)


@pytest.mark.parametrize(
    "prompt",
    [
        "call 555-1234",
        "Please call me back on 555-1234 tomorrow",
        "What is 555-1234?",  # a phone number, even when asked about
        "My number is +44 20 7946-0958",
        "The meeting is on 2026-12-04",
        "What is happening on 2026-12-04?",
        "What is on 12/04/2026?",
        "Book a room for 10-20 people",
        "How many people fit, 10-20?",
        "What is new in version 2.0.1?",
        "Upgrade from 1.2.3 to 1.2.4",
        "Order 3 + 4 boxes",  # an operator, but nobody asked for a result
        "Ticket 12 / 7 is closed",
    ],
)
def test_it_leaves_numbers_that_are_not_arithmetic_alone(prompt):
    assert choose_tool(prompt, OFFERED) is None


def test_it_never_calls_a_calculator_that_is_not_offered():
    assert choose_tool("What is 12 * 7?", {"current_time"}) is None

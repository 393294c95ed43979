"""Number formats of the billing pages: compact token counts, money, percentages, latency."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from django import template

from billing import invoices

register = template.Library()


@register.filter
def compact(value) -> str:
    """12_400_000 → "12.4M"; 950 → "950"."""
    if value is None or value == "":
        return "—"
    number = float(value)
    for size, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= size:
            scaled = number / size
            text = f"{scaled:.1f}" if abs(scaled) < 100 else f"{scaled:.0f}"
            return text.removesuffix(".0") + suffix
    return f"{number:.0f}"


@register.filter
def usd(value) -> str:
    """Money: "$1,234.56"; amounts under a dollar keep four decimals ("$0.0042")."""
    if value is None or value == "":
        return "—"
    amount = Decimal(str(value))
    sign = "−" if amount < 0 else ""
    amount = abs(amount)
    if amount and amount < 1:
        small = amount.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
        if small != small.quantize(Decimal("0.01")):  # keep the digits that say something: $0.0042, but $0.10
            return f"{sign}${small}"
    return f"{sign}${amount.quantize(Decimal('0.01'), rounding=ROUND_HALF_UP):,}"


@register.filter
def usd2(value) -> str:
    """Money to the cent, always: "$0.20", "$4,042.20"."""
    if value is None or value == "":
        return "—"
    amount = Decimal(str(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    sign = "−" if amount < 0 else ""
    return f"{sign}${abs(amount):,}"


@register.filter
def pct(value, digits: int = 1) -> str:
    """A fraction 0–1 as "3.2 %"."""
    if value is None or value == "":
        return "—"
    return f"{float(value) * 100:.{int(digits)}f} %"


@register.filter
def percent(value, digits: int = 0) -> str:
    """A number already in percent (62.4) as "62 %"."""
    if value is None or value == "":
        return "—"
    return f"{float(value):.{int(digits)}f} %"


@register.filter
def ms(value) -> str:
    if value is None or value == "":
        return "—"
    value = int(value)
    if value >= 10_000:
        return f"{value / 1000:.0f} s"
    if value >= 1000:
        return f"{value / 1000:.1f} s"
    return f"{value} ms"


@register.filter
def bar_width(value, total) -> str:
    """CSS width (%) of a bar: value / total, at least a sliver for non-zero values."""
    try:
        value, total = float(value), float(total)
    except (TypeError, ValueError):
        return "0"
    if total <= 0 or value <= 0:
        return "0"
    return f"{max(1.5, min(100.0, value * 100 / total)):.1f}"


@register.filter
def nth(items, index):
    """items[index], wrapping around (chart palettes)."""
    try:
        return items[int(index) % len(items)]
    except (TypeError, ValueError, ZeroDivisionError):
        return ""


@register.filter
def limit_name(kind: str) -> str:
    """The name of a limit ("rpm" → "Requests per minute"), as every page and refusal calls it."""
    from billing.models import LimitKind

    try:
        return LimitKind(kind).label
    except ValueError:
        return kind


@register.filter
def model_label(model_key: str) -> str:
    from billing.dashboards import model_label as label

    return label(model_key or "")


@register.filter
def month_is_over(period) -> bool:
    """{% if invoice.period|month_is_over %}: a draft of a month that has ended is ready to finalise."""
    return invoices.month_is_over(period)

"""How every page shows a moment: "3 Dec 2026, 14:05 UTC".

One convention, so that the same moment reads the same on every page:

* day month-abbreviation year, a 24-hour time, and the zone, always UTC (the portal
  has no per-person time zone, so the zone is said rather than assumed);
* inside a <time> element whose `datetime` is the ISO 8601 instant (for machines and
  assistive technology) and whose `title` is the full timestamp to the second (hover).

    {% load portal_format %}
    {{ entry.created_at|when }}         → <time …>3 Dec 2026, 14:05 UTC</time>
    {{ membership.created_at|when:"date" }} → <time …>3 Dec 2026</time>
    {{ event.created_at|when:"stacked" }}   → <time …>3 Dec 2026,<br>14:05 UTC</time> (dense tables)
    {{ message.created_at|when:"time" }}    → <time …>14:05 UTC</time> (the day is said nearby)
    {{ invitation.expires_at|when_text }}  → 3 Dec 2026, 14:05 UTC (plain text: emails, attributes)

The rule for relative times ("5 minutes ago"): a moment is shown with `when` everywhere,
except in the list of a person's conversations (the chat home and the conversation page's
side list), where what matters is how recently each was active. There, and only there,
`ago` shows the relative time, in the same <time> element (datetime the ISO instant, title
the full timestamp, so the exact moment is one hover away):

    {{ conversation.updated_at|ago }}   → <time … title="3 Dec 2026, 14:05:09 UTC">5 minutes ago</time>

Django's `naturaltime` is not used in templates: it gives neither the <time> element nor
the title. Nor is `|date` for a moment or a day (it says no zone and no <time> element);
`|date` stays for what is not a moment: a billing month's name ("F", "F Y"), the machine
values of links and inputs ("Y-m", "Y-m-d") and an invoice number's "Ym" (DATE_FORMATS).
tests/portal/test_dates.py scans the templates for these rules.
"""

from __future__ import annotations

import datetime as dt
import json
import re

from django import template
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.utils import timezone
from django.utils.html import format_html

register = template.Library()

EMPTY = "—"
# English abbreviations whatever the server's locale (strftime's %b follows it).
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _utc(moment: dt.datetime) -> dt.datetime:
    # Naive datetimes do not occur with USE_TZ; treat one as UTC rather than guess a zone.
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)


def day_text(value: dt.date | dt.datetime) -> str:
    """3 Dec 2026 (a datetime's day in UTC)."""
    if isinstance(value, dt.datetime):
        value = _utc(value)
    return f"{value.day} {MONTHS[value.month - 1]} {value.year}"


def when_text(value: dt.datetime, *, seconds: bool = False) -> str:
    """3 Dec 2026, 14:05 UTC (with seconds: 3 Dec 2026, 14:05:09 UTC)."""
    moment = _utc(value)
    return f"{day_text(moment)}, {moment:%H:%M:%S} UTC" if seconds else f"{day_text(moment)}, {moment:%H:%M} UTC"


def iso(value: dt.date | dt.datetime) -> str:
    """The machine form: 2026-12-03T14:05:09Z for an instant, 2026-12-03 for a day."""
    if isinstance(value, dt.datetime):
        return _utc(value).isoformat(timespec="seconds").replace("+00:00", "Z")
    return value.isoformat()


@register.filter(name="when")
def when(value, style: str = "") -> str:
    """A <time> element in the portal's convention. Styles: "date" shows the day only;
    "stacked" puts the time under the day, for a column in a dense table; "time" shows the
    time of day only when the moment is today (a chat message, a one-hour window), and the
    day with it otherwise, so an old message never reads as if it were from today."""
    if value in (None, ""):
        return EMPTY
    if not isinstance(value, dt.datetime):  # a date: the day is all there is
        return format_html('<time datetime="{}">{}</time>', iso(value), day_text(value))
    full = when_text(value, seconds=True)
    if style == "date":
        return format_html('<time datetime="{}" title="{}">{}</time>', iso(value), full, day_text(value))
    if style == "time" and _utc(value).date() == _utc(timezone.now()).date():
        return format_html('<time datetime="{}" title="{}">{} UTC</time>', iso(value), full, f"{_utc(value):%H:%M}")
    if style == "time":
        return format_html('<time datetime="{}" title="{}">{}</time>', iso(value), full, when_text(value))
    if style == "stacked":
        return format_html(
            '<time datetime="{}" title="{}">{},<br><span class="muted">{} UTC</span></time>',
            iso(value),
            full,
            day_text(value),
            f"{_utc(value):%H:%M}",
        )
    return format_html('<time datetime="{}" title="{}">{}</time>', iso(value), full, when_text(value))


# The formats `|date` may still use in a template: none of them shows a moment or a day.
DATE_FORMATS = ("F", "F Y", "Y-m", "Y-m-d", "Ym")

# The only templates that may show relative times (`ago`): lists of a person's conversations.
RELATIVE_TIME_TEMPLATES = ("agents/chat_home.html", "agents/conversation.html")


@register.filter(name="ago")
def ago(value) -> str:
    """A <time> element saying how long ago ("5 minutes ago"), with the full timestamp as its
    title. Only for the conversation lists (RELATIVE_TIME_TEMPLATES); elsewhere use `when`."""
    if value in (None, ""):
        return EMPTY
    if not isinstance(value, dt.datetime):
        return when(value)
    return format_html(
        '<time datetime="{}" title="{}">{}</time>', iso(value), when_text(value, seconds=True), naturaltime(value)
    )


@register.filter(name="when_text")
def when_text_filter(value) -> str:
    """The same words without markup, for plain-text mail and attributes."""
    if value in (None, ""):
        return EMPTY
    if not isinstance(value, dt.datetime):
        return day_text(value)
    return when_text(value)


@register.filter(name="action_label")
def action_label(action: str) -> str:
    """An audit action's name for people ("api_client.created" → "API client created")."""
    from tenants.audit import action_label as label

    return label(action or "")


# The characters that join the parts of an address, a code, a path or an IdP subject; a dot
# before a digit is a number's ("6000.00", "v1.2"), which stays whole.
_PART_END = re.compile(r"(?<=[@_/:|=&?])|(?<=\.)(?!\d)")


@register.filter(name="breakable")
def breakable(value) -> str:
    """Text, escaped, with a line-break opportunity (<wbr>) after each character that joins
    the parts of an address, a code or a URL: "jane.doe@acme.example" wraps as "jane.doe@" /
    "acme.example" in a narrow column, where the stylesheet would otherwise have to break
    it (and every word beside it) at any letter."""
    if value is None:
        return ""
    parts = [part for part in _PART_END.split(str(value)) if part]
    return format_html("<wbr>".join("{}" for _ in parts), *parts)


@register.filter(name="json_value")
def json_value(value) -> str:
    """One value of a stored JSON object as JSON: null, "", {"action": "x"} (not Python's
    None and {'action': 'x'}); text as it is."""
    if isinstance(value, str):
        return value if value else '""'
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)

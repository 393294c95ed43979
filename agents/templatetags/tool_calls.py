"""`{{ value|tool_json }}`: a tool call's input or result as compact JSON for the chat (escaped
by the template like any text; long values are cut, the stored call keeps them whole)."""

import json

from django import template

register = template.Library()

MAX_CHARS = 600


@register.filter
def tool_json(value) -> str:
    if isinstance(value, dict) and not value:
        return "{}"
    # Keys sorted: PostgreSQL (jsonb) does not keep their order, so the page would differ by database.
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), sort_keys=True, default=str)
    return text if len(text) <= MAX_CHARS else text[: MAX_CHARS - 1] + "…"

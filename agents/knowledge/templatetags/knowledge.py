"""`passage_href`: the link of a chat citation, only when it is a passage page of this tenant.

A citation's `source` comes back from the runtime; the portal wrote it (the
gateway answers each passage with its page), but the value crosses the runtime,
so the chat links it only if it is exactly a passage URL of the current tenant.
"""

import re

from django import template

register = template.Library()

_PASSAGE = re.compile(r"/t/(?P<slug>[\w-]+)/knowledge/passages/\d+/")


@register.filter
def passage_href(source, tenant) -> str:
    if not isinstance(source, str) or tenant is None:
        return ""
    match = _PASSAGE.fullmatch(source)
    return source if match and match.group("slug") == tenant.slug else ""

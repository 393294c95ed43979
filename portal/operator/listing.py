"""The operator console's long lists: a search box, choice filters and 50 rows a page.

With a thousand tenants a list of every agent, identity, tool or skill is thousands of
rows; each list page reads its query string through `list_page`, which answers one
page of rows and what the shared filter bar (templates/operator/_list_filters.html)
needs to draw itself. A filter value outside its choices is the operator's mistake
and is answered 400 naming the allowed values (`BadFilter`), never a silent "all".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.core.paginator import Page, Paginator
from django.db.models import Q, QuerySet

PER_PAGE = 50
MAX_QUERY = 100


class BadFilter(ValueError):
    """A filter value the list does not know; `message` names the allowed ones."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ChoiceFilter:
    """A GET parameter `name` choosing one of `choices` ((value, label) pairs); `where`
    turns the chosen value into the condition on the list's rows."""

    name: str
    label: str
    choices: Sequence[tuple[str, str]]
    where: Callable[[str], Q]

    def chosen(self, query) -> str:
        value = query.get(self.name, "")
        if value == "":
            return ""
        allowed = [v for v, _ in self.choices]
        if value not in allowed:
            shown = "".join(ch for ch in value[:40] if ch.isprintable())
            raise BadFilter(f"Unknown {self.label.lower()} “{shown}”; use one of: {', '.join(allowed)}.")
        return value


def field_filter(name: str, label: str, choices: Sequence[tuple[str, str]], field: str | None = None) -> ChoiceFilter:
    """A filter on one field whose values are `choices` (a model's TextChoices.choices)."""
    field = field or name
    return ChoiceFilter(name, label, choices, lambda value: Q(**{field: value}))


def search_query(query) -> str:
    """The search box's text: PostgreSQL refuses NUL bytes in a query parameter (a 500)
    and no name contains one; longer than any name is no search either."""
    return query.get("q", "").replace("\x00", "").strip()[:MAX_QUERY]


def list_page(
    request,
    rows: QuerySet,
    *,
    search: Sequence[str],
    filters: Sequence[ChoiceFilter] = (),
    per_page: int = PER_PAGE,
) -> dict:
    """The page of `rows` the request's query string selects (`q` matched icontains against
    the `search` fields, then each filter), as template context: `page`, `q`, `filters` (for
    the filter bar) and `filtered`. Raises BadFilter for an unknown filter value.

    A page number past the end shows the last page and one that is not a number the first
    (Paginator.get_page), so an old link never fails."""
    q = search_query(request.GET)
    if q:
        condition = Q()
        for field in search:
            condition |= Q(**{f"{field}__icontains": q})
        rows = rows.filter(condition)
    values = {}
    for choice in filters:
        values[choice.name] = choice.chosen(request.GET)
        if values[choice.name]:
            rows = rows.filter(choice.where(values[choice.name]))
    bar = _bar(filters, values)
    page: Page = Paginator(rows, per_page).get_page(request.GET.get("page"))
    return {"page": page, "q": q, "filters": bar, "filtered": bool(q or any(f["value"] for f in bar))}


def _bar(filters: Sequence[ChoiceFilter], values: dict[str, str]) -> list[dict]:
    """What the filter bar draws for each filter: its select and the value shown chosen. One
    shape for the 200 and the 400 page, so the two cannot drift apart."""
    return [{"name": f.name, "label": f.label, "choices": f.choices, "value": values[f.name]} for f in filters]


def bad_filter_context(request, filters: Sequence[ChoiceFilter], error: BadFilter) -> dict:
    """The context of a list answered 400: no rows, the bar as the operator left it, and why."""
    bar = _bar(filters, {f.name: request.GET.get(f.name, "") for f in filters})
    page = Paginator([], PER_PAGE).get_page(1)
    return {"page": page, "q": search_query(request.GET), "filters": bar, "filtered": True, "list_error": error.message}


def list_context(request, rows: QuerySet, *, search: Sequence[str], filters: Sequence[ChoiceFilter] = ()):
    """(context, status): `list_page`'s context and 200, or for an unknown filter value an
    empty list saying which values are allowed, and 400."""
    try:
        return list_page(request, rows, search=search, filters=filters), 200
    except BadFilter as exc:
        return bad_filter_context(request, filters, exc), 400

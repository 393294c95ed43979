"""Tenant usage dashboard, CSV export, raw-event drill-down and invoices (/t/<slug>/billing/…).

Owners, admins and the billing role (Action.VIEW_BILLING). Thin views: parse the
window → billing.dashboards (roll-ups only) → render. Tenants see tokens, turns and
what they are billed (billing.spend); the price book's cost of their usage is the
provider's and appears only on the operator's pages (`show_cost`). Bad parameters are shown
on the page with a 400, never a 500. The chart specs built here are read by
static/js/billing.js; the same numbers are always in a table next to the chart.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from decimal import Decimal
from urllib.parse import urlencode

from django.http import Http404, HttpResponse, QueryDict
from django.shortcuts import render

from billing import dashboards as d
from billing import invoices as inv
from billing.models import Invoice
from tenants.audit import spreadsheet_safe
from tenants.roles import Action
from tenants.views import tenant_view

# Chart colours, in step with portal.css (accent indigo, then distinct hues that stay apart for colour-blind readers).
ACCENT = "#4f46e5"
ACCENT_LIGHT = "#a5b4fc"
PALETTE = ["#4f46e5", "#0ba5ec", "#17b26a", "#f79009", "#ee46bc", "#7a5af8", "#0e9384", "#98a2b3"]
DANGER = "#f04438"
WARNING = "#f79009"


def _n(value):
    return d.chart_number(value)


# --- chart specs (static/js/billing.js) ---------------------------------------------------------


def usage_chart(series: list[d.Bucket], *, show_cost: bool = False) -> dict:
    """Tokens (input + output, stacked), with turns (and, for operators, cost) as switchable variants."""
    labels = [b.label for b in series]
    tokens = [
        {"label": "Input tokens", "data": [b.totals.input_tokens for b in series], "color": ACCENT},
        {"label": "Output tokens", "data": [b.totals.output_tokens for b in series], "color": ACCENT_LIGHT},
    ]
    turns = [
        {"label": "Turns", "data": [b.totals.turns - b.totals.failed_turns for b in series], "color": PALETTE[1]},
        {"label": "Failed", "data": [b.totals.failed_turns for b in series], "color": DANGER},
    ]
    variants = {"tokens": {"datasets": tokens, "format": "tokens"}, "turns": {"datasets": turns, "format": "int"}}
    if show_cost:
        cost = [{"label": "Cost", "data": [_n(b.totals.cost) for b in series], "color": PALETTE[2]}]
        variants["cost"] = {"datasets": cost, "format": "usd"}
    return {
        "type": "bar",
        "empty": NO_USAGE,
        "labels": labels,
        "stacked": True,
        "format": "tokens",
        "datasets": tokens,
        "variants": variants,
    }


NO_USAGE = "No usage yet"


def _any_turns(series: list[d.Bucket]) -> bool:
    return any(b.totals.turns for b in series)


def latency_chart(series: list[d.Bucket]) -> dict:
    return {
        "type": "line",
        "empty": "No latency was recorded in this period" if _any_turns(series) else NO_USAGE,
        "labels": [b.label for b in series],
        "format": "ms",
        "y1": {"format": "pct", "suggestedMax": 0.1},
        "datasets": [
            {"label": "p50 latency", "data": [b.totals.p50_ms for b in series], "color": ACCENT, "fill": True},
            {"label": "p95 latency", "data": [b.totals.p95_ms for b in series], "color": "#7a5af8", "dashed": True},
            {
                "label": "Error rate",
                "data": [_n(b.totals.error_rate) for b in series],
                "color": DANGER,
                "axis": "y1",
                "type": "line",
            },
        ],
    }


def refusals_chart(series: list[d.Bucket]) -> dict:
    return {
        "type": "bar",
        "empty": "Nothing was throttled or blocked in this period" if _any_turns(series) else NO_USAGE,
        "labels": [b.label for b in series],
        "stacked": True,
        "format": "int",
        "datasets": [
            {
                "label": "Throttled (rate limit, quota, budget)",
                "data": [b.totals.throttled_requests for b in series],
                "color": WARNING,
            },
            {"label": "Blocked by guardrails", "data": [b.totals.blocked_turns for b in series], "color": DANGER},
        ],
    }


def _query(params, **changes) -> str:
    """The current query string with some parameters changed (None drops one)."""
    q = QueryDict(mutable=True)
    for key in ("range", "from", "to", "grouping"):
        if params.get(key):
            q[key] = params[key]
    for key, value in changes.items():
        if value is None:
            q.pop(key, None)
        else:
            q[key] = value
    if "range" in changes:
        q.pop("from", None)
        q.pop("to", None)
    return q.urlencode()


def dashboard_context(request, tenant, window: d.Window, error: str = "", *, show_cost: bool = False) -> dict:
    """What the dashboard template needs; the operator's tenant page uses it too, with
    `show_cost` (the price book's cost of the usage: the provider's, never the tenant's)."""
    board = d.tenant_dashboard(tenant, window)
    params = request.GET
    return {
        "board": board,
        "window": window,
        "error": error,
        "presets": [(key, label, _query(params, range=key)) for key, label in d.PRESETS.items()],
        "groupings": [(g, g.capitalize(), _query(params, grouping=g)) for g in d.GROUPINGS],
        "query": _query(params),
        "charts": {
            "usage": usage_chart(board.series, show_cost=show_cost),
            "latency": latency_chart(board.series),
            "refusals": refusals_chart(board.series),
        },
        "palette": PALETTE,
        "show_cost": show_cost,
        "breakdowns": [
            ("model", "By model", board.by_model),
            ("agent", "By agent", board.by_agent),
            ("user", "By person", board.by_user),
        ],
    }


def _window_or_default(request) -> tuple[d.Window, str]:
    try:
        return d.parse_window(request.GET), ""
    except d.BadQuery as exc:
        return d.parse_window(QueryDict()), exc.message


@tenant_view(Action.VIEW_BILLING)
def dashboard(request):
    window, error = _window_or_default(request)
    context = dashboard_context(request, request.tenant, window, error)
    return render(request, "billing/dashboard.html", context, status=400 if error else 200)


# --- CSV export: the same numbers as the page (tokens and turns, never the provider's cost) ---

EXPORT_DATASETS = ("timeseries", "model", "agent", "user")
TOTAL_COLUMNS = [
    "turns",
    "failed_turns",
    "blocked_turns",
    "throttled_requests",
    "input_tokens",
    "output_tokens",
    "tokens",
    "tool_calls",
    "embedding_tokens",
    "error_rate",
    "latency_p50_ms",
    "latency_p95_ms",
]


def _csv_cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, Decimal):
        return str(value.quantize(Decimal("0.00000001")))
    return value


def usage_csv(window: d.Window, dataset: str) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    if dataset == "timeseries":
        writer.writerow(["period_start", "grouping", *TOTAL_COLUMNS])
        for bucket in d.timeseries(window):
            data = bucket.totals.as_dict()
            writer.writerow([bucket.start.isoformat(), window.grouping, *(_csv_cell(data[c]) for c in TOTAL_COLUMNS)])
    else:
        writer.writerow([dataset, "key", "from", "to", *TOTAL_COLUMNS])
        for row in d.breakdown(window, dataset):
            data = row.totals.as_dict()
            writer.writerow(
                [
                    spreadsheet_safe(row.label),
                    spreadsheet_safe(row.key),
                    window.start.isoformat(),
                    window.end.isoformat(),
                    *(_csv_cell(data[c]) for c in TOTAL_COLUMNS),
                ]
            )
    return out.getvalue()


@tenant_view(Action.VIEW_BILLING)
def export_csv(request):
    try:
        window = d.parse_window(request.GET)
        dataset = request.GET.get("dataset", "timeseries")
        if dataset not in EXPORT_DATASETS:
            raise d.BadQuery("dataset", f"Unknown dataset; use one of: {', '.join(EXPORT_DATASETS)}.")
    except d.BadQuery as exc:
        return HttpResponse(exc.message, status=400, content_type="text/plain; charset=utf-8")
    response = HttpResponse(usage_csv(window, dataset), content_type="text/csv; charset=utf-8")
    filename = f"{request.tenant.slug}-usage-{dataset}-{window.start}-{window.end}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


# --- drill-down: raw events ----------------------------------------------------------------------


def _page_number(raw) -> int:
    try:
        return max(1, min(int(raw), 10_000))
    except (TypeError, ValueError):
        return 1


@tenant_view(Action.VIEW_BILLING)
def events(request):
    window, error = _window_or_default(request)
    filters = {}
    for key in ("model", "agent", "outcome"):
        value = request.GET.get(key, "").replace("\x00", "").strip()[:100]
        if value:
            filters[key] = value
    user = request.GET.get("user", "").strip()
    if user:
        if user.isdigit() and len(user) < 19:
            filters["user"] = int(user)
        else:
            error = error or "Choose a person from the list."
    page = d.events_page(window, page=_page_number(request.GET.get("page")), **filters)
    # Only the tenant's own people are named; the filter's id comes from the URL.
    names = d.person_names({e.user_id for e in page.events} | {filters.get("user")})
    agents = d.agent_names({e.agent_slug for e in page.events})
    rows = [
        {"event": e, "user_name": names.get(e.user_id, "—"), "agent_name": agents.get(e.agent_slug, e.agent_slug)}
        for e in page.events
    ]
    base = _query(request.GET)
    extra = urlencode(filters)
    context = {
        "window": window,
        "page": page,
        "rows": rows,
        "filters": filters,
        "filter_user_name": names.get(filters.get("user"), "—"),
        "error": error,
        "outcomes": ["done", "failed", "cancelled", "blocked"],
        "base_query": "&".join(p for p in (base, extra) if p),
        "presets": [(key, label, _query(request.GET, range=key)) for key, label in d.PRESETS.items()],
    }
    return render(request, "billing/events.html", context, status=400 if error else 200)


# --- invoices ---------------------------------------------------------------------------------------


def access_invoice(invoice_id) -> Invoice:
    """The current tenant's invoice, or 404 for one that is missing or another tenant's."""
    invoice = Invoice.objects.select_related("tenant", "finalized_by").filter(pk=invoice_id).first()
    if invoice is None:
        raise Http404
    return invoice


@tenant_view(Action.VIEW_BILLING)
def invoices(request):
    rows = list(Invoice.objects.select_related("tenant").order_by("-period"))
    return render(request, "billing/invoices.html", {"invoices": rows})


@tenant_view(Action.VIEW_BILLING)
def invoice_detail(request, invoice_id):
    invoice = access_invoice(invoice_id)
    return render(request, "billing/invoice_detail.html", invoice_context(invoice))


def invoice_context(invoice: Invoice) -> dict:
    lines = inv.lines_by_invoice([invoice])[invoice.pk]
    return {
        "invoice": invoice,
        "lines": lines,
        "number": inv.invoice_number(invoice),
        "period_end": (invoice.period.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1),
    }


def invoice_download(invoice_list, fmt: str, filename: str) -> HttpResponse:
    if fmt == "json":
        response = HttpResponse(inv.invoice_json(invoice_list), content_type="application/json")
    else:
        response = HttpResponse(inv.invoice_csv(invoice_list), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}.{fmt}"'
    return response


@tenant_view(Action.VIEW_BILLING)
def invoice_export(request, invoice_id):
    invoice = access_invoice(invoice_id)
    fmt = request.GET.get("format", "csv")
    if fmt not in ("csv", "json"):
        return HttpResponse("Unknown format; use csv or json.", status=400, content_type="text/plain; charset=utf-8")
    return invoice_download([invoice], fmt, inv.invoice_number(invoice))

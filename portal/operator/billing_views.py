"""Operator console, billing: every tenant's revenue, cost and margin; invoices.

Staff only (non-staff get 404, like the rest of the console). Cross-tenant reads
run inside `all_tenants()` (operator_view) and use `unscoped` managers; a
single tenant's numbers are read inside that tenant's context with the same
functions the tenant's own dashboard uses, so both always show the same figures.
"""

from __future__ import annotations

import csv
import datetime as dt
import io

from django.contrib import messages
from django.core.paginator import Paginator
from django.db.models import Q
from django.http import Http404, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from billing import dashboards as d
from billing import invoices as inv
from billing.accounting import month_start, next_month
from billing.models import Invoice, InvoiceStatus, LimitKind
from billing.views import PALETTE, dashboard_context, invoice_context, invoice_download
from portal.operator.listing import ChoiceFilter, field_filter, list_context
from portal.operator.views import audited_read, operator_view
from tenants.audit import client_ip, spreadsheet_safe
from tenants.context import tenant_context
from tenants.models import Tenant
from tenants.services import ServiceError

PER_PAGE = 50
SORT_LABELS = [
    ("name", "Tenant", False),
    ("tier", "Tier", False),
    ("mrr", "MRR", True),
    ("tokens", "Tokens", True),
    ("cost", "Cost", True),
    ("revenue", "Revenue", True),
    ("margin", "Gross margin", True),
    ("throttled", "Throttled", True),
    ("budget", LimitKind.BUDGET.label, True),
]


def _months(current: dt.date, count: int = 12) -> list[dt.date]:
    out, month = [], month_start()
    for _ in range(count):
        out.append(month)
        month = month_start(month - dt.timedelta(days=1))
    if current not in out:
        out.append(current)
    return out


def _table_params(request) -> tuple[dt.date, str, bool, str, str]:
    """month, sort, descending, query, error."""
    error = ""
    try:
        month = d.parse_month(request.GET.get("month"))
    except d.BadQuery as exc:
        month, error = month_start(), exc.message
    sort = request.GET.get("sort", "revenue")
    if sort not in d.OPERATOR_SORTS:
        sort, error = "revenue", error or f"Unknown sort; use one of: {', '.join(d.OPERATOR_SORTS)}."
    descending = request.GET.get("dir", "desc") != "asc"
    query = request.GET.get("q", "").replace("\x00", "").strip()[:100]
    return month, sort, descending, query, error


def _qs(month: dt.date, sort: str, descending: bool, query: str, **changes) -> str:
    q = QueryDict(mutable=True)
    q["month"] = f"{month:%Y-%m}"
    q["sort"], q["dir"] = sort, "desc" if descending else "asc"
    if query:
        q["q"] = query
    for key, value in changes.items():
        q[key] = value
    return q.urlencode()


@operator_view
def billing_overview(request):
    month, sort, descending, query, error = _table_params(request)
    rows = d.operator_rows(month, query=query, sort=sort, descending=descending)
    if request.GET.get("format") == "csv":
        return audited_read(request, _overview_csv(rows, month), "billing")
    page = Paginator(rows, PER_PAGE).get_page(request.GET.get("page"))
    headers = []
    for key, label, numeric in SORT_LABELS:
        active = key == sort
        # Clicking the active column flips the direction; a new column starts with the largest first.
        next_desc = (not descending) if active else numeric
        headers.append(
            {
                "key": key,
                "label": label,
                "numeric": numeric,
                "active": active,
                "aria_sort": ("descending" if descending else "ascending") if active else "",
                "query": _qs(month, key, next_desc, query),
            }
        )
    previous_month = month_start(month - dt.timedelta(days=1))
    context = {
        "page": page,
        "totals": d.operator_totals(rows),
        "month": month,
        "months": [(m, _qs(m, sort, descending, query)) for m in _months(month)],
        "previous_query": _qs(previous_month, sort, descending, query),
        "next_query": _qs(next_month(month), sort, descending, query) if next_month(month) <= month_start() else "",
        "headers": headers,
        "sort": sort,
        "descending": descending,
        "q": query,
        "error": error,
        "csv_query": _qs(month, sort, descending, query, format="csv"),
        "is_current_month": month == month_start(),
    }
    response = render(request, "operator/billing.html", context, status=400 if error else 200)
    return audited_read(request, response, "billing")


def _overview_csv(rows, month: dt.date) -> HttpResponse:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "tenant",
            "name",
            "tier",
            "mrr",
            "tokens",
            "overage_tokens",
            "revenue",
            "cost",
            "gross_margin",
            "margin_percent",
            "turns",
            "throttled_requests",
            "blocked_turns",
            "budget",
            "budget_status",
        ]
    )
    for r in rows:
        writer.writerow(
            [
                r.tenant.slug,
                spreadsheet_safe(r.tenant.name),
                r.tenant.tier.slug,
                r.mrr,
                r.tokens,
                r.overage_tokens,
                r.revenue,
                r.cost_cents,
                r.margin,
                r.margin_percent if r.margin_percent is not None else "",
                r.turns,
                r.throttled,
                r.blocked,
                r.budget if r.budget is not None else "",
                r.budget_status,
            ]
        )
    response = HttpResponse(out.getvalue(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="tenants-billing-{month:%Y-%m}.csv"'
    return response


@operator_view
def billing_tenant(request, slug):
    tenant = get_object_or_404(Tenant.objects.select_related("tier"), slug=slug)
    with tenant_context(tenant):
        try:
            window, error = d.parse_window(request.GET, default_preset="month"), ""
        except d.BadQuery as exc:
            window, error = d.parse_window(QueryDict(), default_preset="month"), exc.message
        context = dashboard_context(request, tenant, window, error, show_cost=True)
        row = d.operator_row(tenant, month_start())
        context.update(
            {
                "tenant": tenant,
                "row": row,
                "invoices": list(Invoice.objects.select_related("tenant").order_by("-period")[:12]),
                "palette": PALETTE,
            }
        )
        response = render(request, "operator/billing_tenant.html", context, status=400 if error else 200)
    return audited_read(request, response, "tenant_billing", tenant)


# --- invoices ---------------------------------------------------------------------------------


INVOICE_STATUS = field_filter("status", "Status", InvoiceStatus.choices)


def _invoice_filters(request) -> list[ChoiceFilter]:
    """Month (the last twelve, and any other well-formed month an old link asks for, so it
    still works) and status."""
    try:
        asked = d.parse_month(request.GET["month"]) if request.GET.get("month") else None
    except d.BadQuery:
        asked = None  # not offered: the month filter answers 400 naming the months it knows
    months = [(f"{m:%Y-%m}", f"{m:%B %Y}") for m in _months(asked or month_start())]
    month = ChoiceFilter("month", "Month", months, lambda value: Q(period=d.parse_month(value)))
    return [month, INVOICE_STATUS]


@operator_view
def billing_invoices(request):
    invoices = Invoice.unscoped.select_related("tenant").order_by("-period", "tenant__name")
    # An unknown month or status is a 400 with no rows (listing.list_context), like every operator list.
    context, status = list_context(
        request, invoices, search=("tenant__name", "tenant__slug"), filters=_invoice_filters(request)
    )
    chosen = {f["name"]: f["value"] for f in context["filters"]}
    last_month = month_start(month_start() - dt.timedelta(days=1))
    context.update(
        {
            "invoices": context["page"].object_list,
            # The month whose invoices the CSV and JSON buttons export: only one the list accepted.
            "month": d.parse_month(chosen["month"]) if status == 200 and chosen["month"] else None,
            "draft_month": last_month,
            "current_month": month_start(),
            "ready_count": inv.ready_drafts().count(),
        }
    )
    response = render(request, "operator/billing_invoices.html", context, status=status)
    return audited_read(request, response, "invoices")


@require_POST
@operator_view
def billing_invoices_draft(request):
    try:
        month = d.parse_month(request.POST.get("month"))
    except d.BadQuery as exc:
        messages.error(request, exc.message)
        return redirect("operator:billing_invoices")
    if month > month_start():
        messages.error(request, "That month has not started yet.")
        return redirect("operator:billing_invoices")
    count = inv.draft_all(month)
    messages.success(
        request,
        f"Drafted {month:%B %Y} for {count} tenant{'s' if count != 1 else ''}; final invoices were left as they are.",
    )
    return redirect(f"{reverse('operator:billing_invoices')}?month={month:%Y-%m}")


@require_POST
@operator_view
def billing_invoices_finalise_ready(request):
    """Every draft whose month is over, finalised one by one (each audited); the running month never."""
    ready = list(inv.ready_drafts())
    if not ready:
        messages.info(request, "No drafts are ready to finalise.")
        return redirect("operator:billing_invoices")
    finalised, failed = inv.finalise_drafts(request.user, ready, ip=client_ip(request))
    if finalised:
        count = len(finalised)
        numbers = ", ".join(inv.invoice_number(i) for i in finalised)
        messages.success(request, f"Finalised {count} ready draft{'s' if count != 1 else ''}: {numbers}.")
    for number, reason in failed:
        messages.error(request, f"{number} was not finalised: {reason}")
    return redirect("operator:billing_invoices")


@operator_view
def billing_invoices_export(request):
    fmt = request.GET.get("format", "csv")
    if fmt not in ("csv", "json"):
        return HttpResponse("Unknown format; use csv or json.", status=400, content_type="text/plain; charset=utf-8")
    try:
        month = d.parse_month(request.GET.get("month"))
    except d.BadQuery as exc:
        return HttpResponse(exc.message, status=400, content_type="text/plain; charset=utf-8")
    invoices = list(Invoice.unscoped.filter(period=month).select_related("tenant").order_by("tenant__name"))
    return audited_read(request, invoice_download(invoices, fmt, f"invoices-{month:%Y-%m}"), "invoices")


def _invoice(invoice_id) -> Invoice:
    invoice = Invoice.unscoped.select_related("tenant", "tenant__tier", "finalized_by").filter(pk=invoice_id).first()
    if invoice is None:
        raise Http404
    return invoice


@operator_view
def billing_invoice(request, invoice_id):
    invoice = _invoice(invoice_id)
    context = invoice_context(invoice)
    context["can_finalise"] = invoice.status == InvoiceStatus.DRAFT and next_month(invoice.period) <= d.today()
    context["margin"] = invoice.total - invoice.cost.quantize(inv.CENTS)
    return audited_read(request, render(request, "operator/billing_invoice.html", context), "invoice", invoice.tenant)


@require_POST
@operator_view
def billing_invoice_finalise(request, invoice_id):
    invoice = _invoice(invoice_id)
    try:
        invoice = inv.finalise_invoice(request.user, invoice, ip=client_ip(request))
    except ServiceError as exc:
        messages.error(request, exc.text)
    else:
        messages.success(request, f"{inv.invoice_number(invoice)} is final: {invoice.currency} {invoice.total}.")
    return redirect("operator:billing_invoice", invoice_id=invoice.pk)


@operator_view
def billing_invoice_export(request, invoice_id):
    invoice = _invoice(invoice_id)
    fmt = request.GET.get("format", "csv")
    if fmt not in ("csv", "json"):
        return HttpResponse("Unknown format; use csv or json.", status=400, content_type="text/plain; charset=utf-8")
    response = invoice_download([invoice], fmt, inv.invoice_number(invoice))
    return audited_read(request, response, "invoice_export", invoice.tenant)

"""Operator billing over the REST API: /api/v1/operator/billing/tenants/ and /api/v1/operator/invoices/.

The same numbers as the console's Billing pages (billing.dashboards.operator_rows,
billing.invoices.invoice_data). Staff only, by browser session or an operator token with
`operator:billing:read` (portal.operator.api.OperatorAPIMixin); anyone else gets 404, as
the console answers. Reads run inside all_tenants().
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, viewsets
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response

from billing import dashboards as d
from billing import invoices as inv
from billing.api import InvoiceSerializer
from billing.models import Invoice, InvoiceStatus
from portal.api import choice_param
from portal.operator import services as operator_services
from portal.operator.api import OperatorAPIMixin
from portal.schema import counted_list, one_object
from tenants.audit import client_ip
from tenants.context import all_tenants
from tenants.identity import operator_tokens

REASON = "operator API: billing"


def _bad(exc: d.BadQuery):
    return ValidationError({exc.field: [exc.message]})


class OperatorRowSerializer(serializers.Serializer):
    tenant = serializers.CharField(source="tenant.slug")
    name = serializers.CharField(source="tenant.name")
    tier = serializers.CharField(source="tenant.tier.slug")
    status = serializers.CharField(source="tenant.status")
    mrr = serializers.DecimalField(max_digits=14, decimal_places=2)
    tokens = serializers.IntegerField()
    overage_tokens = serializers.IntegerField()
    revenue = serializers.DecimalField(max_digits=14, decimal_places=2)
    cost = serializers.DecimalField(source="cost_cents", max_digits=14, decimal_places=2)
    gross_margin = serializers.DecimalField(source="margin", max_digits=14, decimal_places=2)
    margin_percent = serializers.DecimalField(max_digits=8, decimal_places=1, allow_null=True)
    turns = serializers.IntegerField()
    throttled_requests = serializers.IntegerField(source="throttled")
    blocked_turns = serializers.IntegerField(source="blocked")
    budget = serializers.DecimalField(max_digits=14, decimal_places=2, allow_null=True)
    budget_status = serializers.ChoiceField(choices=["none", "ok", "alert", "stop"])


class OperatorTableSerializer(serializers.Serializer):
    month = serializers.CharField()
    sort = serializers.CharField()
    count = serializers.IntegerField()
    revenue = serializers.DecimalField(max_digits=16, decimal_places=2)
    cost = serializers.DecimalField(max_digits=16, decimal_places=2)
    gross_margin = serializers.DecimalField(max_digits=16, decimal_places=2)
    results = OperatorRowSerializer(many=True)


class TenantBillingViewSet(OperatorAPIMixin, viewsets.ViewSet):
    """Every tenant's revenue, cost and gross margin for one month."""

    operator_reason = REASON
    # Read only: a write method is a 405, not a missing scope.
    operator_scopes = (operator_tokens.BILLING_READ, operator_tokens.BILLING_READ)

    @extend_schema(
        parameters=[
            OpenApiParameter("month", str, description="YYYY-MM (default: this month)"),
            OpenApiParameter("sort", str, enum=list(d.OPERATOR_SORTS), description="Default revenue"),
            OpenApiParameter("dir", str, enum=["asc", "desc"], description="Default desc"),
            OpenApiParameter("q", str, description="Name or slug contains"),
        ],
        # One object (the month's table), not a page of them.
        responses=one_object(OperatorTableSerializer),
    )
    def list(self, request):
        params = request.query_params
        sort = choice_param(request, "sort", d.OPERATOR_SORTS, default="revenue")
        direction = choice_param(request, "dir", ("asc", "desc"), default="desc")
        query = params.get("q", "").replace("\x00", "").strip()[:100]
        try:
            month = d.parse_month(params.get("month"))
            with all_tenants(REASON):
                rows = d.operator_rows(month, query=query, sort=sort, descending=direction == "desc")
        except d.BadQuery as exc:
            raise _bad(exc) from None
        operator_services.record_read(request.user, "billing", ip=client_ip(request))
        totals = d.operator_totals(rows)
        data = {
            "month": f"{month:%Y-%m}",
            "sort": sort,
            "count": len(rows),
            "revenue": totals.revenue,
            "cost": totals.cost,
            "gross_margin": totals.margin,
            "results": rows,
        }
        return Response(OperatorTableSerializer(data).data)


class OperatorInvoiceSerializer(InvoiceSerializer):
    """An invoice as the operator sees it: the tenant's own fields and which tenant it is."""

    tenant = serializers.CharField(help_text="The tenant's slug")

    class Meta(InvoiceSerializer.Meta):
        fields = [*InvoiceSerializer.Meta.fields[:2], "tenant", *InvoiceSerializer.Meta.fields[2:]]


class OperatorInvoiceViewSet(OperatorAPIMixin, viewsets.ViewSet):
    """Every tenant's invoices (the same JSON as the console's export)."""

    operator_reason = REASON
    operator_scopes = (operator_tokens.BILLING_READ, operator_tokens.BILLING_READ)

    @extend_schema(
        parameters=[
            OpenApiParameter("month", str, description="YYYY-MM"),
            OpenApiParameter("status", str, enum=["draft", "final"]),
        ],
        responses=counted_list("OperatorInvoiceList", OperatorInvoiceSerializer),
    )
    def list(self, request):
        params = request.query_params
        with all_tenants(REASON):
            invoices = Invoice.unscoped.select_related("tenant").order_by("-period", "tenant__name")
            if params.get("month"):
                try:
                    invoices = invoices.filter(period=d.parse_month(params["month"]))
                except d.BadQuery as exc:
                    raise _bad(exc) from None
            status = choice_param(request, "status", InvoiceStatus.values)
            if status is not None:
                invoices = invoices.filter(status=status)
            invoices = list(invoices[:500])
            operator_services.record_read(request.user, "invoices", ip=client_ip(request))
            lines = inv.lines_by_invoice(invoices)
            return Response({"count": len(invoices), "results": [inv.invoice_data(i, lines[i.pk]) for i in invoices]})

    @extend_schema(
        parameters=[OpenApiParameter("id", int, OpenApiParameter.PATH, description="The invoice's id")],
        responses=OperatorInvoiceSerializer,
    )
    def retrieve(self, request, pk=None):
        if not str(pk).isdigit() or len(str(pk)) > 18:
            raise NotFound()
        with all_tenants(REASON):
            invoice = Invoice.unscoped.select_related("tenant").filter(pk=int(pk)).first()
            if invoice is None:
                raise NotFound()
            operator_services.record_read(request.user, "invoice", tenant=invoice.tenant, ip=client_ip(request))
            return Response(inv.invoice_data(invoice))

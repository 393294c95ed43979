"""REST API for usage and invoices: /api/v1/tenants/<slug>/usage/… and …/invoices/.

Owners, admins, the billing role and API clients with the `billing:read` scope
(Action.VIEW_BILLING). The numbers are the dashboard's (billing.dashboards, daily
roll-ups only); money is a decimal string, never a float. Money here is what the tenant
is billed (billing.spend: plan fee + token overage, the budget caps it), never the price
book's cost of its usage, which is the provider's and only operators see. Bad parameters (a date
that is not one, an unknown grouping) answer a 400 problem naming the field.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response

from billing import dashboards as d
from billing.models import Invoice, InvoiceLine, InvoiceStatus
from portal.api import TenantScopedAPIMixin, choice_param
from tenants.roles import Action

TENANT_SLUG = OpenApiParameter("tenant_slug", str, OpenApiParameter.PATH, description="The tenant's slug")
WINDOW_PARAMETERS = [
    OpenApiParameter(
        "range", str, enum=list(d.PRESETS), description="A preset period (default 30d); ignored with from/to"
    ),
    OpenApiParameter("from", str, description="First day, YYYY-MM-DD (UTC)"),
    OpenApiParameter("to", str, description="Last day, YYYY-MM-DD (UTC), inclusive"),
]
GROUPING = OpenApiParameter("grouping", str, enum=list(d.GROUPINGS), description="Bucket size (default day)")
BY = OpenApiParameter("by", str, enum=list(d.BREAKDOWNS), required=True, description="What to break down by")


class TotalsSerializer(serializers.Serializer):
    turns = serializers.IntegerField()
    failed_turns = serializers.IntegerField()
    blocked_turns = serializers.IntegerField()
    throttled_requests = serializers.IntegerField()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    tokens = serializers.IntegerField()
    tool_calls = serializers.IntegerField()
    embedding_tokens = serializers.IntegerField(
        help_text="Tokens the knowledge bases' embedding service was paid for: not part of `tokens` "
        "(the plan's tokens: quota and overage)"
    )
    error_rate = serializers.FloatField(allow_null=True)
    latency_p50_ms = serializers.IntegerField(allow_null=True)
    latency_p95_ms = serializers.IntegerField(allow_null=True)


class GaugeSerializer(serializers.Serializer):
    used = serializers.DecimalField(max_digits=24, decimal_places=8)
    limit = serializers.DecimalField(max_digits=24, decimal_places=8, allow_null=True)
    forecast = serializers.DecimalField(max_digits=24, decimal_places=8)
    percent = serializers.FloatField(allow_null=True)
    forecast_percent = serializers.FloatField(allow_null=True)
    state = serializers.ChoiceField(choices=["none", "ok", "alert", "over"])


class BillSerializer(serializers.Serializer):
    tokens = serializers.IntegerField(help_text="Tokens the bill is for")
    fee = serializers.DecimalField(max_digits=14, decimal_places=2, help_text="The plan's monthly fee")
    overage = serializers.DecimalField(max_digits=14, decimal_places=2, help_text="Token overage beyond the quota")
    total = serializers.DecimalField(max_digits=14, decimal_places=2, help_text="Fee plus overage")


class MonthSerializer(serializers.Serializer):
    month = serializers.DateField()
    tokens = GaugeSerializer(help_text="Tokens this month against the tier's monthly token quota")
    bill = BillSerializer(help_text="This month's bill so far: the plan's fee plus token overage")
    forecast_bill = BillSerializer(help_text="The bill the month heads for at the recent rate of tokens")
    budget = GaugeSerializer(
        help_text="This month's bill (plan fee + token overage) against the tenant's monthly budget, which caps it"
    )
    overage_tokens = serializers.IntegerField()
    overage_charge = serializers.DecimalField(max_digits=14, decimal_places=2)
    forecast_overage_charge = serializers.DecimalField(max_digits=14, decimal_places=2)


class SummarySerializer(serializers.Serializer):
    start = serializers.DateField()
    end = serializers.DateField()
    totals = TotalsSerializer()
    month = MonthSerializer()


class BucketSerializer(serializers.Serializer):
    start = serializers.DateField()
    totals = TotalsSerializer()


class TimeseriesSerializer(serializers.Serializer):
    start = serializers.DateField()
    end = serializers.DateField()
    grouping = serializers.ChoiceField(choices=list(d.GROUPINGS))
    buckets = BucketSerializer(many=True)


class BreakdownRowSerializer(serializers.Serializer):
    key = serializers.CharField()
    label = serializers.CharField()
    share = serializers.FloatField()
    totals = TotalsSerializer()


class BreakdownSerializer(serializers.Serializer):
    start = serializers.DateField()
    end = serializers.DateField()
    by = serializers.ChoiceField(choices=list(d.BREAKDOWNS))
    results = BreakdownRowSerializer(many=True)


def _window(request) -> d.Window:
    try:
        return d.parse_window(request.query_params)
    except d.BadQuery as exc:
        raise ValidationError({exc.field: [exc.message]}) from None


def _gauge(gauge: d.Gauge) -> dict:
    return {
        "used": gauge.used,
        "limit": gauge.limit,
        "forecast": gauge.forecast,
        "percent": gauge.percent,
        "forecast_percent": gauge.forecast_percent,
        "state": gauge.state,
    }


@extend_schema(parameters=[TENANT_SLUG])
class UsageViewSet(TenantScopedAPIMixin, viewsets.ViewSet):
    """Usage of the tenant (tokens, turns) and its bill so far, from the daily roll-ups."""

    action_permissions = {
        "summary": Action.VIEW_BILLING,
        "timeseries": Action.VIEW_BILLING,
        "breakdown": Action.VIEW_BILLING,
    }

    @extend_schema(parameters=WINDOW_PARAMETERS, responses=SummarySerializer)
    @action(detail=False, methods=["get"])
    def summary(self, request, *args, **kwargs):
        """Totals for the period, and this month's quota, bill and budget with the month-end forecast."""
        window = _window(request)
        outlook = d.month_outlook(request.tenant)
        data = {
            "start": window.start,
            "end": window.end,
            "totals": d.totals(window).as_dict(),
            "month": {
                "month": outlook.month,
                "tokens": _gauge(outlook.tokens),
                "bill": outlook.bill.as_dict(),
                "forecast_bill": outlook.forecast_bill.as_dict(),
                "budget": _gauge(outlook.budget),
                "overage_tokens": outlook.overage_tokens,
                "overage_charge": outlook.overage_charge,
                "forecast_overage_charge": outlook.forecast_overage_charge,
            },
        }
        return Response(SummarySerializer(data).data)

    @extend_schema(parameters=[*WINDOW_PARAMETERS, GROUPING], responses=TimeseriesSerializer)
    @action(detail=False, methods=["get"])
    def timeseries(self, request, *args, **kwargs):
        """One bucket per day, week or month of the period (empty buckets included)."""
        window = _window(request)
        buckets = [{"start": b.start, "totals": b.totals.as_dict()} for b in d.timeseries(window)]
        data = {"start": window.start, "end": window.end, "grouping": window.grouping, "buckets": buckets}
        return Response(TimeseriesSerializer(data).data)

    @extend_schema(parameters=[*WINDOW_PARAMETERS, BY], responses=BreakdownSerializer)
    @action(detail=False, methods=["get"])
    def breakdown(self, request, *args, **kwargs):
        """Totals per model, agent or person, largest first."""
        window = _window(request)
        by = request.query_params.get("by", "")
        try:
            rows = d.breakdown(window, by)
        except d.BadQuery as exc:
            raise ValidationError({exc.field: [exc.message]}) from None
        results = [{"key": r.key, "label": r.label, "share": r.share, "totals": r.totals.as_dict()} for r in rows]
        return Response(
            BreakdownSerializer({"start": window.start, "end": window.end, "by": by, "results": results}).data
        )


class InvoiceLineSerializer(serializers.ModelSerializer):
    class Meta:
        model = InvoiceLine
        fields = ["kind", "description", "quantity", "unit_price", "amount"]


@extend_schema_field({"type": "string", "pattern": r"^\d{4}-\d{2}$", "example": "2026-12"})
class MonthField(serializers.DateField):
    """A calendar month, written YYYY-MM."""

    def __init__(self, **kwargs):
        super().__init__(format="%Y-%m", **kwargs)


class InvoiceSerializer(serializers.ModelSerializer):
    number = serializers.SerializerMethodField()
    period = MonthField()
    lines = InvoiceLineSerializer(many=True, read_only=True)

    class Meta:
        model = Invoice
        fields = [
            "id",
            "number",
            "period",
            "status",
            "currency",
            "base_fee",
            "overage_amount",
            "total",
            "tokens",
            "drafted_at",
            "finalized_at",
            "lines",
        ]

    def get_number(self, invoice) -> str:
        from billing.invoices import invoice_number

        return invoice_number(invoice)


@extend_schema(parameters=[TENANT_SLUG])
class InvoiceViewSet(TenantScopedAPIMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """The tenant's monthly invoices (drafts follow usage until an operator finalises them)."""

    serializer_class = InvoiceSerializer
    action_permissions = {"list": Action.VIEW_BILLING, "retrieve": Action.VIEW_BILLING}

    def get_queryset(self):
        queryset = Invoice.objects.prefetch_related("lines").order_by("-period")
        status = choice_param(self.request, "status", InvoiceStatus.values)
        if status is not None:
            queryset = queryset.filter(status=status)
        return queryset

    @extend_schema(
        parameters=[
            OpenApiParameter("status", str, enum=InvoiceStatus.values, description="Only drafts or only final invoices")
        ]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(parameters=[OpenApiParameter("id", int, OpenApiParameter.PATH, description="The invoice's id")])
    def retrieve(self, request, *args, **kwargs):
        return super().retrieve(request, *args, **kwargs)

    def get_object(self):
        raw = self.kwargs.get("pk", "")
        if not str(raw).isdigit() or len(str(raw)) > 18:
            raise NotFound()
        invoice = Invoice.objects.prefetch_related("lines").filter(pk=int(raw)).first()
        if invoice is None:
            raise NotFound()
        return invoice

"""REST API of the tenancy core: /api/v1/tenants/, members and invitations."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied, ValidationError
from rest_framework.response import Response

from portal.api import TenantScopedAPIMixin, choice_param
from portal.schema import counted_list
from tenants import services
from tenants.access import access_invitation, access_membership
from tenants.context import user_context
from tenants.forms import AuditFilterForm
from tenants.models import AuditLog, Invitation, InvitationStatus, Membership, Tenant
from tenants.roles import Action
from tenants.serializers import (
    AuditLogEntrySerializer,
    InvitationCreateSerializer,
    InvitationSerializer,
    MembershipSerializer,
    RoleChangeSerializer,
    TenantSerializer,
)

TENANT_SLUG = OpenApiParameter("tenant_slug", str, OpenApiParameter.PATH, description="The tenant's slug")


class TenantViewSet(viewsets.ViewSet):
    """The tenants the caller may read: a person's, or an access token's one tenant."""

    lookup_field = "slug"
    lookup_value_regex = "[^/]+"
    serializer_class = TenantSerializer

    def _readable(self, request) -> list[tuple[Tenant, str | None]]:
        """(tenant, the caller's role there) for each tenant the caller may read; the
        role is None for an API client, which has no membership."""
        from tenants.identity.scopes import ACTION_SCOPES
        from tenants.identity.tokens import AccessToken

        token = request.auth if isinstance(request.auth, AccessToken) else None
        if token is None:
            with user_context(request.user.pk):
                memberships = Membership.of_user(request.user).order_by("tenant__name")
                return [(m.tenant, m.role) for m in memberships]
        # A token speaks for one tenant only: a member's token for the member's tenant, an
        # API client's (client_credentials) for the tenant the client belongs to.
        scope = ACTION_SCOPES[Action.VIEW_TENANT]
        if scope not in token.scopes:
            raise PermissionDenied(f"The access token lacks the scope {scope}.")
        if token.membership is not None:
            return [(token.tenant, token.membership.role)]
        return [(token.tenant, None)]

    @extend_schema(responses=counted_list("TenantList", TenantSerializer))
    def list(self, request):
        readable = self._readable(request)
        roles = {tenant.pk: role for tenant, role in readable}
        data = TenantSerializer([tenant for tenant, _ in readable], many=True, context={"roles": roles}).data
        return Response({"count": len(data), "results": data})

    @extend_schema(responses=TenantSerializer)
    def retrieve(self, request, slug=None):
        for tenant, role in self._readable(request):
            if tenant.slug == slug:
                return Response(TenantSerializer(tenant, context={"roles": {tenant.pk: role}}).data)
        raise NotFound()


@extend_schema(parameters=[TENANT_SLUG])
class MemberViewSet(
    TenantScopedAPIMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = MembershipSerializer
    action_permissions = {
        "list": Action.VIEW_MEMBERS,
        "retrieve": Action.VIEW_MEMBERS,
        "partial_update": Action.CHANGE_ROLES,
        "destroy": Action.REMOVE_MEMBERS,
    }

    def get_queryset(self):
        return Membership.objects.select_related("user").order_by("user__email")

    def get_object(self):
        return access_membership(self.kwargs["pk"])

    @extend_schema(request=RoleChangeSerializer, responses=MembershipSerializer)
    def partial_update(self, request, *args, **kwargs):
        membership = self.get_object()
        payload = RoleChangeSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        services.change_role(services.Actor.from_request(request), membership, payload.validated_data["role"])
        return Response(MembershipSerializer(membership).data)

    def destroy(self, request, *args, **kwargs):
        services.remove_member(services.Actor.from_request(request), self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(parameters=[TENANT_SLUG])
class InvitationViewSet(
    TenantScopedAPIMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = InvitationSerializer
    action_permissions = {
        "list": Action.VIEW_MEMBERS,
        "retrieve": Action.VIEW_MEMBERS,
        "create": Action.INVITE_MEMBERS,
        "destroy": Action.MANAGE_INVITATIONS,
        "resend": Action.MANAGE_INVITATIONS,
    }

    def get_queryset(self):
        queryset = Invitation.objects.select_related("invited_by")
        status_filter = choice_param(self.request, "status", InvitationStatus.values)
        if status_filter is not None:
            queryset = queryset.filter(status=status_filter)
        return queryset

    def get_object(self):
        return access_invitation(self.kwargs["pk"])

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "status",
                str,
                enum=InvitationStatus.values,
                required=False,
                description="Only invitations in this state",
            )
        ]
    )
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

    @extend_schema(request=InvitationCreateSerializer, responses={201: InvitationSerializer})
    def create(self, request, *args, **kwargs):
        payload = InvitationCreateSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        invitation = services.invite_member(services.Actor.from_request(request), **payload.validated_data)
        return Response(InvitationSerializer(invitation).data, status=status.HTTP_201_CREATED)

    @extend_schema(description="Revoke a pending invitation.")
    def destroy(self, request, *args, **kwargs):
        services.revoke_invitation(services.Actor.from_request(request), self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses=InvitationSerializer)
    @action(detail=True, methods=["post"])
    def resend(self, request, *args, **kwargs):
        invitation = services.resend_invitation(services.Actor.from_request(request), self.get_object())
        return Response(InvitationSerializer(invitation).data)


AUDIT_FILTERS = [
    OpenApiParameter("action", str, required=False, description="Entries whose action contains this, e.g. member."),
    OpenApiParameter("actor", str, required=False, description="Entries whose actor's email contains this."),
    OpenApiParameter("since", OpenApiTypes.DATE, required=False, description="Entries on or after this day."),
    OpenApiParameter("until", OpenApiTypes.DATE, required=False, description="Entries on or before this day."),
]


@extend_schema(parameters=[TENANT_SLUG])
class AuditLogViewSet(TenantScopedAPIMixin, mixins.ListModelMixin, viewsets.GenericViewSet):
    """The tenant's audit log, newest first, a page at a time: the rows the audit log page
    shows, with its filters (action, actor, a date range). Read only; owners and admins,
    and API clients with the audit:read scope."""

    serializer_class = AuditLogEntrySerializer
    action_permissions = {"list": Action.VIEW_AUDIT_LOG}

    def get_queryset(self):
        # The page's own filter form (tenants.forms), so the API and the page select alike;
        # the operator's tenant filter is not a tenant's to use.
        names = ("action", "actor", "since", "until")
        given = {name: self.request.query_params[name] for name in names if name in self.request.query_params}
        form = AuditFilterForm(given)
        if not form.is_valid():
            raise ValidationError({name: errors for name, errors in form.errors.items()})
        return form.filter(AuditLog.objects.order_by("-created_at", "-id"))

    @extend_schema(parameters=AUDIT_FILTERS, description="The tenant's audit log, newest first.")
    def list(self, request, *args, **kwargs):
        return super().list(request, *args, **kwargs)

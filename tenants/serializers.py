from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from tenants import entitlements
from tenants.models import AuditLog, Invitation, Membership, Tenant, Tier
from tenants.roles import Role


class TierSerializer(serializers.ModelSerializer):
    class Meta:
        model = Tier
        fields = [
            "slug",
            "name",
            "monthly_price",
            "included_tokens",
            "overage_price_per_1k_tokens",
            "requests_per_minute",
            "tokens_per_minute",
            "concurrent_sessions",
            "knowledge_storage_mb",
            "allowed_models",
            "default_features",
        ]


class TenantSerializer(serializers.ModelSerializer):
    tier = TierSerializer(read_only=True)
    role = serializers.SerializerMethodField()
    entitlements = serializers.SerializerMethodField()

    class Meta:
        model = Tenant
        fields = ["slug", "name", "status", "deployment_model", "region", "tier", "role", "entitlements"]

    @extend_schema_field(
        serializers.ChoiceField(
            choices=Role.choices,
            allow_null=True,
            help_text="The caller's role in the tenant; null for an API client, which is no member.",
        )
    )
    def get_role(self, tenant: Tenant) -> str | None:
        return self.context["roles"].get(tenant.pk)

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_entitlements(self, tenant: Tenant) -> list[str]:
        return sorted(entitlements.effective_entitlements(tenant))


class MembershipSerializer(serializers.ModelSerializer):
    email = serializers.EmailField(source="user.email", read_only=True)
    full_name = serializers.CharField(source="user.full_name", read_only=True)

    class Meta:
        model = Membership
        fields = ["id", "email", "full_name", "role", "created_at"]
        read_only_fields = ["id", "email", "full_name", "created_at"]


class RoleChangeSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=Role.choices)


class InvitationSerializer(serializers.ModelSerializer):
    invited_by = serializers.EmailField(source="invited_by.email", read_only=True, default=None)

    class Meta:
        model = Invitation
        fields = ["id", "email", "role", "status", "expires_at", "invited_by", "sent_count", "created_at"]
        read_only_fields = ["id", "status", "expires_at", "invited_by", "sent_count", "created_at"]


class InvitationCreateSerializer(serializers.Serializer):
    email = serializers.EmailField(max_length=254)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.MEMBER)


class AuditLogEntrySerializer(serializers.ModelSerializer):
    actor_email = serializers.EmailField(
        read_only=True, allow_blank=True, help_text="Who did it (kept when the account is deleted); empty: the system."
    )
    target = serializers.CharField(
        source="target_repr", read_only=True, help_text="What it was done to, as named then."
    )
    before = serializers.DictField(read_only=True, help_text="The changed fields before (empty for a creation).")
    after = serializers.DictField(read_only=True, help_text="The changed fields after.")

    class Meta:
        model = AuditLog
        fields = [
            "id",
            "created_at",
            "action",
            "actor_email",
            "ip_address",
            "target_type",
            "target_id",
            "target",
            "before",
            "after",
        ]
        read_only_fields = fields

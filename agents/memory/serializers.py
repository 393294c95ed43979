from rest_framework import serializers

from agents.memory.models import MAX_CONTENT_CHARS
from agents.memory.policy import Scope
from agents.memory.stores import MAX_K
from tenants.roles import Role

MAX_QUERY_CHARS = 2000


class MemorySerializer(serializers.Serializer):
    id = serializers.CharField()
    content = serializers.CharField()
    namespace = serializers.CharField(help_text="The memory's namespace path (/tenant/<t>/user/<u>[/agent/<slug>]).")
    created_at = serializers.CharField()
    score = serializers.FloatField()


class MemoryListSerializer(serializers.Serializer):
    memories = MemorySerializer(many=True)


class _GatewayBody(serializers.Serializer):
    agent = serializers.SlugField(max_length=60, required=False, allow_blank=True, default="")
    tenant_id = serializers.CharField(
        max_length=20, required=False, help_text="If given, must be the tenant of the token (the runtime's header)."
    )


class GatewayRecallSerializer(_GatewayBody):
    query = serializers.CharField(max_length=MAX_QUERY_CHARS)
    k = serializers.IntegerField(min_value=1, max_value=MAX_K, default=5)


class GatewayRememberSerializer(_GatewayBody):
    content = serializers.CharField(max_length=MAX_CONTENT_CHARS)
    scope = serializers.ChoiceField(
        choices=Scope.CHOICES,
        default=Scope.AGENT,
        help_text="agent: the member's facts for this agent; user: for all agents; shared: the tenant's (admins).",
    )


# --- the tenant REST API (/api/v1/tenants/<slug>/memories/ and /memory-members/) ---------------


class MemoryEntrySerializer(serializers.Serializer):
    id = serializers.CharField(
        help_text="What DELETE takes: the portal's record number, or AgentCore Memory's memoryRecordId (mem-…)."
    )
    content = serializers.CharField()
    scope = serializers.ChoiceField(
        choices=Scope.CHOICES,
        help_text="agent: the member's fact for one agent; user: for all agents; shared: the tenant's.",
    )
    agent = serializers.CharField(allow_null=True, help_text="The agent's slug (scope agent only).")
    namespace = serializers.CharField(help_text="The namespace path (/tenant/<t>/user/<u>[/agent/<slug>], or /shared).")
    created_at = serializers.DateTimeField(allow_null=True)


class MemoryCreateSerializer(serializers.Serializer):
    content = serializers.CharField(max_length=MAX_CONTENT_CHARS)
    scope = serializers.ChoiceField(
        choices=Scope.CHOICES,
        required=False,
        help_text=(
            "agent: yours, for `agent` only; user: yours, for all agents; shared: the tenant's, every agent "
            "recalls it for everyone (owners and admins). Default: agent when `agent` is given, else user."
        ),
    )
    agent = serializers.SlugField(max_length=60, required=False, help_text="The agent's slug (scope agent).")

    def validate(self, attrs):
        agent = attrs.get("agent")
        scope = attrs.get("scope") or (Scope.AGENT if agent else Scope.USER)
        if scope == Scope.AGENT and not agent:
            raise serializers.ValidationError({"agent": "Name the agent this memory is for (its slug)."})
        if scope != Scope.AGENT and agent:
            raise serializers.ValidationError({"agent": f"Only a memory of scope agent names an agent, not {scope}."})
        agents = self.context.get("agents", {})
        if agent and agent not in agents:
            raise serializers.ValidationError({"agent": f"No agent “{agent}” here."})
        return {**attrs, "scope": scope, "agent": agents.get(agent) if agent else None}


class MemberMemorySerializer(serializers.Serializer):
    membership_id = serializers.IntegerField()
    email = serializers.EmailField()
    role = serializers.ChoiceField(choices=Role.choices)
    count = serializers.IntegerField(
        allow_null=True,
        help_text=(
            "How many memories the member has (never their contents). null in the list for a tenant on "
            "AgentCore Memory: counting there takes calls per member, so ask for one member's count."
        ),
    )
    more = serializers.BooleanField(help_text="More than `count`: AgentCore Memory counts up to a cap per call.")


class ClearedSerializer(serializers.Serializer):
    deleted = serializers.IntegerField()
    failed = serializers.IntegerField(help_text="Records AgentCore Memory did not delete (see `detail`).")
    more = serializers.BooleanField(help_text="More records remain beyond the cap of one call: clear again.")
    detail = serializers.CharField(allow_blank=True)

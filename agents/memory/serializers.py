from rest_framework import serializers

from agents.memory.models import MAX_CONTENT_CHARS
from agents.memory.policy import Scope
from agents.memory.stores import MAX_K

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

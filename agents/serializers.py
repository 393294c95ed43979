from __future__ import annotations

from rest_framework import serializers

from agents.models import Agent, Conversation, Invocation, Message


class AgentSerializer(serializers.ModelSerializer):
    shared = serializers.BooleanField(source="is_shared", read_only=True)

    class Meta:
        model = Agent
        fields = ["id", "slug", "name", "description", "shared"]


class ConversationSerializer(serializers.ModelSerializer):
    agent = AgentSerializer(read_only=True)

    class Meta:
        model = Conversation
        fields = ["id", "title", "agent", "created_at", "updated_at"]


class ConversationCreateSerializer(serializers.Serializer):
    agent = serializers.IntegerField(min_value=1, max_value=2**63 - 1)


class ConversationUpdateSerializer(serializers.Serializer):
    title = serializers.CharField(
        max_length=Conversation._meta.get_field("title").max_length,
        help_text="The new title: one line (line breaks become spaces), not empty.",
    )


class MessageSerializer(serializers.ModelSerializer):
    class Meta:
        model = Message
        fields = [
            "id",
            "role",
            "content",
            "status",
            "citations",
            "tool_calls",
            "error",
            "blocked_by_guardrails",
            "feedback",
            "model_label",
            "created_at",
        ]


class MessageCreateSerializer(serializers.Serializer):
    text = serializers.CharField(max_length=20_000, trim_whitespace=True)


class InvocationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Invocation
        fields = [
            "id",
            "status",
            "conversation",
            "model_key",
            "runtime",
            "queued_at",
            "started_at",
            "first_token_at",
            "finished_at",
            "input_tokens",
            "output_tokens",
            "tool_call_count",
            "usage_estimated",
            "error",
        ]


class TurnAcceptedSerializer(serializers.Serializer):
    invocation_id = serializers.UUIDField()
    status = serializers.CharField()
    stream_url = serializers.CharField()
    message_id = serializers.IntegerField()

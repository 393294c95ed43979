from __future__ import annotations

from rest_framework import serializers

from agents.skills.models import MAX_INSTRUCTIONS_CHARS, Skill, SkillStatus

_MAX_ID = 2**63 - 1


class SkillSerializer(serializers.ModelSerializer):
    shared = serializers.BooleanField(source="is_shared", read_only=True, help_text="The provider's skill.")
    extends = serializers.IntegerField(source="extends_id", read_only=True, allow_null=True)

    class Meta:
        model = Skill
        fields = ["id", "key", "name", "description", "instructions", "status", "shared", "extends", "updated_at"]
        read_only_fields = fields


class SkillWriteSerializer(serializers.Serializer):
    key = serializers.SlugField(max_length=64)
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(max_length=500)
    instructions = serializers.CharField(max_length=MAX_INSTRUCTIONS_CHARS)
    status = serializers.ChoiceField(choices=SkillStatus.choices, default=SkillStatus.DRAFT)
    extends = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        max_value=_MAX_ID,
        help_text="The id of a shared skill of the tenant's plan whose common steps run first (bridge).",
    )


class AgentSkillsSerializer(serializers.Serializer):
    agent = serializers.IntegerField(read_only=True)
    skills = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=_MAX_ID),
        max_length=100,
        help_text="Ids of the skills the agent follows (replaces the previous choice).",
    )

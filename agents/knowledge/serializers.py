from __future__ import annotations

from rest_framework import serializers

from agents.knowledge.models import Backend, Document, KnowledgeBase
from agents.knowledge.retrieval import MAX_K, MAX_QUERY_CHARS


class KnowledgeBaseSerializer(serializers.ModelSerializer):
    document_count = serializers.IntegerField(read_only=True, default=0)

    class Meta:
        model = KnowledgeBase
        fields = [
            "id",
            "name",
            "description",
            "backend",
            "chunk_size",
            "chunk_overlap",
            "document_count",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "document_count", "created_at", "updated_at"]


class KnowledgeBaseCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")
    backend = serializers.ChoiceField(choices=Backend.choices, default=Backend.LOCAL)
    chunk_size = serializers.IntegerField(min_value=200, max_value=8000, default=1200)
    chunk_overlap = serializers.IntegerField(min_value=0, max_value=4000, default=150)


class KnowledgeBaseUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    # No default: a PATCH without a description keeps the one the base has.
    description = serializers.CharField(
        max_length=500, required=False, allow_blank=True, help_text="Left as it is when not sent."
    )


class DocumentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Document
        fields = [
            "id",
            "knowledge_base",
            "title",
            "filename",
            "kind",
            "size",
            "checksum",
            "status",
            "error",
            "version",
            "chunk_count",
            "created_at",
            "updated_at",
            "indexed_at",
        ]
        read_only_fields = fields


class DocumentUploadSerializer(serializers.Serializer):
    knowledge_base = serializers.IntegerField(min_value=1, max_value=2**62)
    file = serializers.FileField(allow_empty_file=True)


class UploadResultSerializer(serializers.Serializer):
    outcome = serializers.ChoiceField(choices=["created", "new_version", "unchanged"])
    document = DocumentSerializer()


class SearchRequestSerializer(serializers.Serializer):
    query = serializers.CharField(max_length=MAX_QUERY_CHARS)
    k = serializers.IntegerField(min_value=1, max_value=MAX_K, default=5)


class PassageSerializer(serializers.Serializer):
    id = serializers.CharField()
    title = serializers.CharField()
    text = serializers.CharField()
    source = serializers.CharField(help_text="The passage's page in the portal (tenant-scoped).")
    score = serializers.FloatField()
    document_id = serializers.IntegerField()
    knowledge_base_id = serializers.IntegerField()
    flagged = serializers.BooleanField(required=False)


class PassageListSerializer(serializers.Serializer):
    passages = PassageSerializer(many=True)
    unsearched = serializers.ListField(
        child=serializers.CharField(),
        help_text="Names of the agent's knowledge bases that could not be searched this time (their "
        "backend failed while the others answered); the passages come from the others only.",
    )


class GatewayRetrieveSerializer(serializers.Serializer):
    query = serializers.CharField(max_length=MAX_QUERY_CHARS)
    k = serializers.IntegerField(min_value=1, max_value=MAX_K, default=5)
    agent = serializers.SlugField(max_length=60, required=False, allow_blank=True, default="")
    tenant_id = serializers.CharField(
        max_length=20, required=False, help_text="If given, must be the tenant of the token (the runtime's header)."
    )

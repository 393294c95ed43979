from __future__ import annotations

import json

from django import forms

from agents.tools import services
from agents.tools.handlers import SCHEMAS
from agents.tools.models import Tool
from tenants.models import Tier
from tenants.services import ServiceError


class ToolForm(forms.ModelForm):
    """The operator's registry entry; the input schema is edited as JSON."""

    input_schema = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 12, "class": "mono"}),
        label="Input schema (JSON Schema)",
        required=False,
        help_text="A JSON Schema object the tool's input must match; empty: the handler's default schema.",
    )
    # Chosen by slug among the tiers listed (never a database lookup of what was posted: a
    # number past the column's range or a NUL would fail the query instead of the form).
    tiers = forms.MultipleChoiceField(
        choices=(),
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="Tenants on these tiers may enable the tool for their agents.",
    )

    class Meta:
        model = Tool
        fields = ["key", "name", "description", "handler", "status", "tiers"]
        widgets = {"description": forms.Textarea(attrs={"rows": 3})}
        help_texts = {
            "key": "What the model calls the tool by: letters, digits, - and _ (at most 64).",
            "description": "Told to the model: when to use the tool and what it answers.",
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.all_tiers = {tier.slug: tier for tier in Tier.objects.order_by("name")}
        self.fields["tiers"].choices = [(slug, tier.name) for slug, tier in self.all_tiers.items()]
        if self.instance.pk and not self.is_bound:
            self.initial["input_schema"] = json.dumps(self.instance.input_schema, indent=2)
            self.initial["tiers"] = list(self.instance.tiers.values_list("slug", flat=True))

    def clean_tiers(self):
        return [self.all_tiers[slug] for slug in self.cleaned_data["tiers"]]

    def clean_input_schema(self):
        raw = self.cleaned_data["input_schema"].strip()
        if not raw:
            return None
        try:
            schema = json.loads(raw)
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}") from None
        try:
            services.check_schema(schema)
        except ServiceError as exc:
            raise forms.ValidationError(exc.text) from None
        return schema

    def clean(self):
        data = super().clean()
        if self.cleaned_data.get("input_schema", "") is None and data.get("handler") in SCHEMAS:
            self.cleaned_data["input_schema"] = SCHEMAS[data["handler"]]
        return data

    def save(self, commit=True):
        tool = super().save(commit=False)
        tool.input_schema = self.cleaned_data["input_schema"]
        return tool

"""The registry's forms: a version (and, for a new agent, its short name) and a rejection."""

from __future__ import annotations

from django import forms

from agents.registry import services
from tenants.services import ServiceError


class VersionForm(forms.Form):
    """A version of an agent. Choices are listed, never looked up from what was posted;
    the service checks the model against the tier's routing rules."""

    slug = forms.SlugField(
        max_length=services.SLUG_MAX,
        required=False,
        label="Short name",
        help_text="Letters, digits and hyphens; empty: made from the name. It cannot change later.",
    )
    name = forms.CharField(max_length=services.NAME_MAX)
    description = forms.CharField(
        max_length=services.DESCRIPTION_MAX,
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="What members read in the catalogue.",
    )
    instructions = forms.CharField(
        max_length=services.INSTRUCTIONS_MAX,
        widget=forms.Textarea(attrs={"rows": 10, "class": "mono"}),
        help_text="The agent's system instructions: sent to the model on every turn, never shown to members.",
    )
    model = forms.ChoiceField(choices=(), required=False)
    offered_to_tiers = forms.MultipleChoiceField(
        choices=(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Offered to tiers",
        help_text="Tenants on these tiers may enable the agent.",
    )
    change_note = forms.CharField(
        max_length=services.NOTE_MAX, required=False, help_text="What changed and why, for the reviewer."
    )

    def __init__(self, *args, models, tiers=None, new_agent=False, initial_version=None, **kwargs):
        if initial_version is not None:
            kwargs.setdefault(
                "initial",
                {
                    "name": initial_version.name,
                    "description": initial_version.description,
                    "instructions": initial_version.instructions,
                    "model": initial_version.model.key if initial_version.model else "",
                    "offered_to_tiers": initial_version.offered_to_tiers,
                },
            )
        super().__init__(*args, **kwargs)
        self.fields["model"].choices = [("", "The tier's default model")] + [(m.key, m.name) for m in models]
        if tiers is None:
            del self.fields["offered_to_tiers"]
            self.fields["model"].required = True
            self.fields["model"].choices = self.fields["model"].choices[1:]
        else:
            self.fields["offered_to_tiers"].choices = [(t.slug, t.name) for t in tiers]
        if not new_agent:
            del self.fields["slug"]
        self.order_fields(["name", "slug"])

    def draft(self) -> services.Draft:
        data = self.cleaned_data
        return services.Draft(
            name=data["name"],
            description=data.get("description", ""),
            instructions=data["instructions"],
            model_key=data.get("model", ""),
            offered_to_tiers=tuple(data.get("offered_to_tiers") or ()),
            change_note=data.get("change_note", ""),
        )

    def add_service_error(self, exc: ServiceError) -> None:
        if hasattr(exc, "error_dict"):
            for name, errors in exc.message_dict.items():
                self.add_error(name if name in self.fields else None, errors)
        else:
            self.add_error(None, exc.messages)


class RejectForm(forms.Form):
    reason = forms.CharField(max_length=services.NOTE_MAX, help_text="Told to the author.")

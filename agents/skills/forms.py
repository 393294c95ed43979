from __future__ import annotations

from django import forms

from agents.skills.models import Skill
from tenants.models import Tier

_WIDGETS = {
    "description": forms.TextInput(),
    "instructions": forms.Textarea(attrs={"rows": 14, "class": "mono"}),
}
_HELP = {
    "key": "A short identifier: letters, digits, - and _ (at most 64).",
    "description": "Told to the model: when the skill applies.",
    "instructions": "The steps the agent follows, in markdown (at most 8,000 characters).",
    "status": "Only active skills reach the agent.",
}


class OperatorSkillForm(forms.ModelForm):
    """A shared skill: the operator's, offered to the tiers chosen."""

    # Chosen by slug among the tiers listed (never a lookup of what was posted).
    tiers = forms.MultipleChoiceField(
        choices=(),
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text="Tenants on these tiers may give the skill to their agents or extend it with their own steps.",
    )

    class Meta:
        model = Skill
        fields = ["key", "name", "description", "instructions", "status"]
        widgets = _WIDGETS
        help_texts = _HELP

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["tiers"].choices = [(t.slug, t.name) for t in Tier.objects.order_by("name")]
        if self.instance.pk and not self.is_bound:
            self.initial["tiers"] = list(self.instance.tiers or [])

    def save(self, commit=True):
        skill = super().save(commit=False)
        skill.tiers = sorted(self.cleaned_data["tiers"])
        return skill


class TenantSkillForm(forms.ModelForm):
    """A tenant's own skill; it may extend a shared skill of the tenant's tier (bridge)."""

    extends = forms.TypedChoiceField(
        choices=(),
        coerce=int,
        required=False,
        empty_value=None,
        label="Extends",
        help_text="A shared skill whose common steps run first; then the agent follows the steps below.",
    )

    class Meta:
        model = Skill
        fields = ["key", "name", "description", "instructions", "status"]
        widgets = _WIDGETS
        help_texts = _HELP

    def __init__(self, *args, shared_skills=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.shared = {skill.pk: skill for skill in shared_skills}
        if self.instance.extends_id and self.instance.extends_id not in self.shared:
            self.shared[self.instance.extends_id] = self.instance.extends  # keep showing what it extends
        self.fields["extends"].choices = [("", "Nothing: a skill of its own")] + [
            (pk, skill.name) for pk, skill in self.shared.items()
        ]
        if self.instance.pk and not self.is_bound:
            self.initial["extends"] = self.instance.extends_id or ""

    def save(self, commit=True):
        skill = super().save(commit=False)
        extends = self.cleaned_data.get("extends")
        skill.extends = self.shared[extends] if extends else None
        return skill

from __future__ import annotations

from django import forms

from agents.memory.models import MAX_CONTENT_CHARS


class SharedMemoryForm(forms.Form):
    """A fact an owner or admin keeps for all of the tenant's agents and members."""

    content = forms.CharField(
        label="New shared memory",
        max_length=MAX_CONTENT_CHARS,
        widget=forms.TextInput(attrs={"placeholder": "e.g. Our support hours are 9 to 17 CET."}),
        help_text="Every agent recalls it for everyone in the organisation. Do not put secrets here.",
    )

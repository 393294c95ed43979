"""Forms of the machine-identity screens: API clients, agent identities, the MFA requirement."""

from __future__ import annotations

from collections.abc import Iterable

from django import forms

from tenants.identity import scopes as scope_lib


def scope_choices(allowed: Iterable[str]) -> list[tuple[str, str]]:
    """Choices in the catalogue's order (related scopes stay together)."""
    allowed = set(allowed)
    return [(scope, label) for scope, label in scope_lib.SCOPES.items() if scope in allowed]


class ApiClientForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        help_text="What will use it, e.g. “Nightly export” or “CI pipeline”.",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
    scopes = forms.MultipleChoiceField(
        widget=forms.CheckboxSelectMultiple,
        help_text="Only scopes you hold yourself: a client never has more rights than its creator. "
        "A client can read, not change: inviting or removing members, editing settings and "
        "knowledge bases need a person. Nor can it chat with agents, which act on behalf of a "
        "member, never for an API client.",
        error_messages={"required": "Choose at least one scope."},
    )

    def __init__(self, *args, allowed_scopes: Iterable[str], **kwargs):
        super().__init__(*args, **kwargs)
        # Only what a client can use (scope_lib.CLIENT_SCOPES): its token is no person's.
        self.fields["scopes"].choices = scope_choices(set(allowed_scopes) & scope_lib.CLIENT_SCOPES)


class AgentIdentityForm(forms.Form):
    name = forms.CharField(
        max_length=100,
        help_text="As people will see it, e.g. “Support triage agent”.",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
    allowed_scopes = forms.MultipleChoiceField(
        label="Allowed scopes",
        widget=forms.CheckboxSelectMultiple,
        help_text="The most a token acting through this agent may carry; each token is also "
        "limited to the scopes of the user it acts for.",
        error_messages={"required": "Choose at least one scope."},
    )

    def __init__(self, *args, allowed_scopes: Iterable[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["allowed_scopes"].choices = scope_choices(allowed_scopes)


class MfaRequirementForm(forms.Form):
    require_mfa = forms.BooleanField(required=False)

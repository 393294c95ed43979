"""Forms of the single sign-on screens (tenants/identity/sso_views.py)."""

from __future__ import annotations

from django import forms
from django.utils.formats import date_format

from tenants.identity import sso
from tenants.identity.models import SSO_DEFAULT_ROLES, SSOConnection
from tenants.roles import Role


class SSOConnectionForm(forms.Form):
    """The tenant's SSO settings. Parsing only; tenants.identity.sso validates (for every caller)."""

    issuer = forms.CharField(
        label="Issuer URL",
        max_length=500,
        help_text="Your identity provider's issuer, e.g. https://example.okta.com or "
        "https://login.microsoftonline.com/<tenant id>/v2.0. The portal reads its discovery document.",
        widget=forms.URLInput(attrs={"placeholder": "https://login.example.com", "autocomplete": "off"}),
    )
    client_id = forms.CharField(
        label="Client ID", max_length=255, widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"})
    )
    client_secret = forms.CharField(
        label="Client secret",
        max_length=1000,
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    domains = forms.CharField(
        label="Email domains",
        max_length=5000,
        help_text="One per line. People with these addresses sign in through your identity provider "
        "once you prove each domain with a DNS record (shown after saving).",
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": "example.com", "spellcheck": "false"}),
    )
    default_role = forms.ChoiceField(
        label="Role of new members",
        choices=SSO_DEFAULT_ROLES,
        initial=Role.MEMBER,
        help_text="People who sign in for the first time join with this role (an invitation's role wins).",
    )
    enforced = forms.BooleanField(
        label="Require single sign-on: refuse password sign-in for these domains",
        help_text="People at these domains then open this organisation only after signing in through your "
        "identity provider. Someone who also belongs to another organisation keeps their password for it.",
        required=False,
    )
    enabled = forms.BooleanField(label="Single sign-on is on", required=False, initial=True)

    def __init__(self, *args, connection: SSOConnection | None = None, can_change_provider: bool = True, **kwargs):
        if connection is not None and not args and "initial" not in kwargs:
            kwargs["initial"] = {
                "issuer": connection.issuer,
                "client_id": connection.client_id,
                "domains": "\n".join(sso.domains_of(connection)),
                "default_role": connection.default_role,
                "enforced": connection.enforced,
                "enabled": connection.enabled,
            }
        super().__init__(*args, **kwargs)
        if not can_change_provider:
            # Which IdP signs people in is an owner's choice (Action.MANAGE_SSO_PROVIDER):
            # shown, and a disabled field keeps its stored value whatever is posted.
            for name in ("issuer", "client_id"):
                self.fields[name].disabled = True
                self.fields[name].initial = getattr(connection, name, "")
            self.fields["issuer"].help_text = "Only an owner can change the identity provider (issuer and client ID)."
        secret = self.fields["client_secret"]
        if connection is None:
            secret.required = True
            secret.error_messages["required"] = "Enter the client secret your identity provider gave the portal."
            secret.help_text = "Stored encrypted; it is never shown again."
        else:
            set_on = date_format(connection.secret_updated_at, "j M Y")
            secret.help_text = f"A secret is stored (set {set_on}). Leave empty to keep it."
            secret.widget.attrs["placeholder"] = "•" * 12

    def clean_domains(self) -> list[str]:
        return sso.split_domains(self.cleaned_data["domains"])


class SSOStartForm(forms.Form):
    email = forms.EmailField(
        label="Work email",
        max_length=254,
        widget=forms.EmailInput(attrs={"autocomplete": "email", "placeholder": "name@company.com", "autofocus": True}),
    )

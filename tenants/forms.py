from __future__ import annotations

from django import forms
from django.contrib.auth import password_validation
from django.db import models

from tenants import audit
from tenants.models import User
from tenants.roles import Action, Role, can


def role_choices_for(actor_role: str | None) -> list[tuple[str, str]]:
    """Only owners may hand out the owner role."""
    return [
        (value, label) for value, label in Role.choices if value != Role.OWNER or can(actor_role, Action.MANAGE_OWNERS)
    ]


class InviteForm(forms.Form):
    email = forms.EmailField(max_length=254, widget=forms.EmailInput(attrs={"placeholder": "name@company.com"}))
    role = forms.ChoiceField(choices=Role.choices, initial=Role.MEMBER)

    def __init__(self, *args, actor_role: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = role_choices_for(actor_role)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)

    def __init__(self, *args, actor_role: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = role_choices_for(actor_role)


class AcceptInvitationForm(forms.Form):
    """For someone who has no account yet: name and password; the email is the invitation's."""

    full_name = forms.CharField(max_length=150, required=False, label="Your name")
    password1 = forms.CharField(label="Password", widget=forms.PasswordInput, strip=False)
    password2 = forms.CharField(label="Repeat password", widget=forms.PasswordInput, strip=False)

    def __init__(self, *args, email: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.email = email

    def clean(self):
        cleaned = super().clean()
        p1, p2 = cleaned.get("password1"), cleaned.get("password2")
        if p1 and p2 and p1 != p2:
            self.add_error("password2", "The two passwords differ.")
        if p1:
            try:
                password_validation.validate_password(
                    p1, User(email=self.email, full_name=cleaned.get("full_name", ""))
                )
            except forms.ValidationError as exc:
                self.add_error("password1", exc)
        return cleaned


class AuditFilterForm(forms.Form):
    action = forms.CharField(required=False, max_length=64)
    actor = forms.CharField(required=False, max_length=254, label="Actor email")
    tenant = forms.CharField(required=False, max_length=50, label="Tenant slug")
    since = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))

    @classmethod
    def from_query(cls, query) -> AuditFilterForm:
        """The filters of a page's query string: the page number is the pager's, not a filter,
        so the form is bound only when a real filter is there."""
        filters = query.copy()
        filters.pop("page", None)
        return cls(filters or None)

    def filter(self, queryset):
        if not self.is_valid():
            return queryset
        data = self.cleaned_data
        if data["action"]:  # the code or the label ("api_client" and "API client" alike)
            by_label = audit.actions_matching(data["action"])
            queryset = queryset.filter(models.Q(action__icontains=data["action"]) | models.Q(action__in=by_label))
        if data["actor"]:
            queryset = queryset.filter(actor_email__icontains=data["actor"])
        if data["tenant"]:
            queryset = queryset.filter(tenant__slug=data["tenant"])
        if data["since"]:
            queryset = queryset.filter(created_at__date__gte=data["since"])
        if data["until"]:
            queryset = queryset.filter(created_at__date__lte=data["until"])
        return queryset

    def applied(self) -> dict[str, str]:
        """The filters in force (valid form), JSON-safe: what an export records it selected."""
        if not self.is_bound or not self.is_valid():
            return {}
        return {name: str(value) for name, value in self.cleaned_data.items() if value}

from __future__ import annotations

import copy
from decimal import Decimal

from django import forms

from tenants.entitlements import FEATURES
from tenants.identity import operator_tokens
from tenants.models import (
    BINDING_KEYS,
    DeploymentModel,
    Tenant,
    Tier,
    region_validator,
    runtime_url_validator,
    slug_validator,
)


class TenantCreateForm(forms.Form):
    name = forms.CharField(max_length=150)
    slug = forms.CharField(max_length=50, validators=[slug_validator], help_text="Used in URLs: /t/<slug>/")
    tier = forms.ModelChoiceField(queryset=Tier.objects.all(), empty_label=None)
    deployment_model = forms.ChoiceField(choices=DeploymentModel.choices)
    region = forms.CharField(max_length=32, initial="us-east-1", validators=[region_validator])
    owner_email = forms.EmailField(required=False, help_text="Receives an owner invitation.")

    def clean_name(self):
        name = self.cleaned_data["name"]
        if error := Tenant(name=name).name_error():
            raise forms.ValidationError(error)
        return name

    def clean_slug(self):
        slug = self.cleaned_data["slug"]
        if Tenant.objects.filter(slug=slug).exists():
            raise forms.ValidationError("A tenant with this slug exists.")
        return slug


class TenantUpdateForm(forms.Form):
    name = forms.CharField(max_length=150)
    tier = forms.ModelChoiceField(queryset=Tier.objects.all(), empty_label=None)
    deployment_model = forms.ChoiceField(choices=DeploymentModel.choices)
    region = forms.CharField(max_length=32, validators=[region_validator])
    runtime_arn = forms.CharField(required=False, max_length=300, label="Runtime ARN (agentcore)")
    runtime_url = forms.CharField(
        required=False,
        max_length=300,
        validators=[runtime_url_validator],
        label="Runtime URL (http)",
        help_text="e.g. http://initech-runtime.internal:8080",
    )
    memory_id = forms.CharField(required=False, max_length=200, label="Memory id")
    knowledge_base_id = forms.CharField(required=False, max_length=200, label="Knowledge base id")
    knowledge_data_source_id = forms.CharField(
        required=False, max_length=200, label="Data source id", help_text="Of the knowledge base: its S3 source"
    )
    gateway_id = forms.CharField(required=False, max_length=200, label="Gateway id")
    iam_role_arn = forms.CharField(
        required=False,
        max_length=300,
        label="IAM role ARN",
        help_text="A silo tenant's own role. Assumed with session tags tenant_id, tier, deployment_model for every"
        " AWS call made for this tenant (runtime, memory, knowledge, tools, guardrails). Empty, or not silo:"
        " the platform role (AWS_TENANT_ROLE_ARN).",
    )
    celery_queue = forms.CharField(
        required=False, max_length=63, label="Celery queue (silo)", help_text="Default for a silo: tenant-<slug>"
    )
    feature_grants = forms.MultipleChoiceField(
        required=False,
        choices=list(FEATURES.items()),
        widget=forms.CheckboxSelectMultiple,
        label="Granted beyond the tier",
    )
    feature_revocations = forms.MultipleChoiceField(
        required=False,
        choices=list(FEATURES.items()),
        widget=forms.CheckboxSelectMultiple,
        label="Revoked although the tier includes them",
    )
    # Offered only after a tier change was refused for the tenant's budget (offer_budget_raise):
    # the amount the operator agrees to travels with the tick, so a fee changed since is asked again.
    raise_budget = forms.BooleanField(required=False)
    budget_raise_offered: Decimal | None = None
    budget_cap: Decimal | None = None
    raise_budget_to = forms.DecimalField(
        required=False, max_digits=12, decimal_places=2, min_value=0, widget=forms.HiddenInput
    )

    @classmethod
    def for_tenant(cls, tenant: Tenant, data=None):
        initial = {
            "name": tenant.name,
            "tier": tenant.tier_id,
            "deployment_model": tenant.deployment_model,
            "region": tenant.region,
            **{key: (tenant.resource_bindings or {}).get(key, "") for key in BINDING_KEYS},
            "feature_grants": tenant.feature_grants or [],
            "feature_revocations": tenant.feature_revocations or [],
        }
        form = cls(data, initial=initial)
        form.tenant = tenant
        # Only what can matter: grants of features the tier lacks, revocations of ones it has
        # (and whatever is set today, so that a save never drops it unseen).
        in_tier = set(tenant.tier.default_features or [])
        grantable = (set(FEATURES) - in_tier) | set(tenant.feature_grants or [])
        revocable = in_tier | set(tenant.feature_revocations or [])
        form.fields["feature_grants"].choices = [(k, v) for k, v in FEATURES.items() if k in grantable]
        form.fields["feature_revocations"].choices = [(k, v) for k, v in FEATURES.items() if k in revocable]
        return form

    def clean_name(self):
        name = self.cleaned_data["name"]
        if error := Tenant(pk=self.tenant.pk, name=name).name_error():
            raise forms.ValidationError(error)
        return name

    def clean(self):
        cleaned = super().clean()
        both = set(cleaned.get("feature_grants") or []) & set(cleaned.get("feature_revocations") or [])
        if both:
            self.add_error("feature_revocations", f"Granted and revoked at once: {', '.join(sorted(both))}.")
        self._check_bindings(cleaned)
        return cleaned

    def _check_bindings(self, cleaned: dict) -> None:
        """The bindings as the tenant would have them, checked by the model's own rules
        (shapes, and no dedicated resource shared with a tier or another tenant)."""
        if "tier" not in cleaned or "deployment_model" not in cleaned:
            return
        candidate = copy.copy(self.tenant)
        candidate.tier = cleaned["tier"]
        candidate.deployment_model = cleaned["deployment_model"]
        # A field that failed its own validation is left out; the others are still checked.
        candidate.resource_bindings = {key: cleaned[key] for key in BINDING_KEYS if cleaned.get(key)}
        for key, messages in candidate.binding_errors().items():
            for message in messages:
                self.add_error(key, message)

    def changes(self) -> dict:
        data = self.cleaned_data
        return {
            "name": data["name"],
            "tier": data["tier"],
            "deployment_model": data["deployment_model"],
            "region": data["region"],
            "resource_bindings": {key: data[key] for key in BINDING_KEYS if data.get(key)},
        }

    def budget_raise(self) -> Decimal | None:
        """The budget the operator agreed to raise the tenant's to with this move, if any."""
        if not self.cleaned_data.get("raise_budget"):
            return None
        return self.cleaned_data.get("raise_budget_to")

    def offer_budget_raise(self, amount: Decimal, cap: Decimal) -> None:
        """Show "Also raise the budget cap to <amount>" (from `cap`), unticked: the operator decides."""
        self.budget_raise_offered, self.budget_cap = amount, cap
        label = f"Also raise the budget cap to ${amount:,.2f}"
        self.fields["raise_budget"].label = label
        self["raise_budget"].label = label  # the bound field, made (and cached) when the form was validated
        if self.is_bound:
            data = self.data.copy()
            data["raise_budget_to"] = f"{amount:.2f}"
            data.pop("raise_budget", None)
            self.data = data

    def feature_changes(self) -> dict:
        return {"grants": self.cleaned_data["feature_grants"], "revocations": self.cleaned_data["feature_revocations"]}


class SuspendForm(forms.Form):
    reason = forms.CharField(max_length=300, widget=forms.TextInput(attrs={"placeholder": "e.g. unpaid invoice"}))


class OwnerInvitationForm(forms.Form):
    """Invite an owner for a tenant that has none yet (e.g. the first address was mistyped)."""

    email = forms.EmailField(label="Owner email", max_length=254)


class TierForm(forms.ModelForm):
    default_features = forms.MultipleChoiceField(
        choices=list(FEATURES.items()), widget=forms.CheckboxSelectMultiple, required=False
    )
    allowed_models = forms.CharField(
        required=False,
        help_text="Comma-separated model keys, the tier's default first, e.g. offline-small, "
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        widget=forms.TextInput(),
    )
    # Offered only after a price change was refused for tenants' budgets (offer_budget_raises):
    # the raises the operator agrees to travel with the tick ("<tenant pk>:<amount>,…"), so a
    # tenant or an amount that changed since is asked again (tenants.services.save_tier).
    raise_budgets = forms.BooleanField(required=False, label="Also raise those tenants' budget caps to the new fee")
    raise_budgets_for = forms.CharField(required=False, widget=forms.HiddenInput)
    budget_raises_offered: list | None = None

    class Meta:
        model = Tier
        fields = [
            "name",
            "slug",
            "description",
            "monthly_price",
            "included_tokens",
            "overage_price_per_1k_tokens",
            "requests_per_minute",
            "tokens_per_minute",
            "concurrent_sessions",
            "knowledge_storage_mb",
            "overage_allowed",
            "allowed_models",
            "default_features",
            "celery_queue",
        ]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.is_bound and "knowledge_storage_mb" not in self.data:
            # The page always sends it; a scripted post written before the field existed keeps
            # the tier's allowance (a new tier: the default) instead of failing on it. Sent
            # empty or wrong, it is an error like any other field's.
            self.data = self.data.copy()
            self.data["knowledge_storage_mb"] = str(self.instance.knowledge_storage_mb)
        if self.instance.pk and not self.is_bound:
            self.initial["allowed_models"] = ", ".join(self.instance.allowed_models or [])

    def clean_raise_budgets_for(self) -> dict[int, Decimal]:
        raw = self.cleaned_data.get("raise_budgets_for") or ""
        agreed = {}
        # A budget's own rules (a finite, non-negative amount of cents), so no tampered amount
        # such as sNaN or 1e999 reaches the comparison with the fee (a 500) or the budget.
        amount_field = forms.DecimalField(max_digits=12, decimal_places=2, min_value=0)
        try:
            for item in filter(None, raw.split(",")):
                pk, amount = item.split(":")
                agreed[int(pk)] = amount_field.clean(amount)
        except (ValueError, ArithmeticError, forms.ValidationError):
            # Only a tampered post gets here (the page writes this field itself); a hidden
            # field's error would not show, so it is the form's.
            self.add_error(None, "The budget raises agreed to could not be read: save again to be asked again.")
            return {}
        return agreed

    def budget_raises(self) -> dict[int, Decimal] | None:
        """The raises the operator agreed to with this price ({tenant pk: amount}), if ticked."""
        if not self.cleaned_data.get("raise_budgets"):
            return None
        return self.cleaned_data.get("raise_budgets_for") or {}

    def offer_budget_raises(self, shortfalls: list) -> None:
        """Show "Also raise those tenants' budget caps to the new fee" for `shortfalls`
        ((tenant, BudgetShortfall) pairs), unticked: the operator decides."""
        self.budget_raises_offered = shortfalls
        if self.is_bound:
            data = self.data.copy()
            data["raise_budgets_for"] = ",".join(f"{tenant.pk}:{s.lowest:.2f}" for tenant, s in shortfalls)
            data.pop("raise_budgets", None)
            self.data = data

    def clean_allowed_models(self):
        raw = self.cleaned_data.get("allowed_models") or ""
        models = [item.strip() for item in raw.split(",") if item.strip()]
        if any(len(m) > 200 for m in models):
            raise forms.ValidationError("A model id is at most 200 characters.")
        # A typo would leave the tier with a model that routing silently skips.
        known = shared_model_keys()
        unknown = [m for m in dict.fromkeys(models) if m not in known]
        if unknown:
            raise forms.ValidationError(
                f"Unknown model{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}. "
                f"Models on offer: {', '.join(sorted(known)) or 'none yet'}."
            )
        return list(dict.fromkeys(models))


def shared_model_keys() -> set[str]:
    """The keys of the models the platform offers every tier (a tenant's fine-tuned model is
    not a tier's to allow: it replaces its base model for that tenant only)."""
    from agents.models import ModelOffering

    return set(ModelOffering.unscoped.filter(owner_tenant__isnull=True).values_list("key", flat=True))


class OperatorTokenForm(forms.Form):
    """A new operator API token (tenants.identity.operator_tokens)."""

    name = forms.CharField(
        max_length=100,
        help_text="What will use it, e.g. “Nightly billing export” or “Catalogue CI”.",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
    scopes = forms.MultipleChoiceField(
        widget=forms.CheckboxSelectMultiple,
        help_text="Give it only what the automation needs: reading billing, reading the shared "
        "catalogue, or changing it too.",
        error_messages={"required": "Choose at least one scope."},
    )
    days = forms.IntegerField(
        label="Expires after (days)",
        min_value=1,
        max_value=operator_tokens.MAX_DAYS,
        initial=operator_tokens.DEFAULT_DAYS,
        help_text=f"At most {operator_tokens.MAX_DAYS} days. Create a new token before it expires.",
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["scopes"].choices = list(operator_tokens.SCOPES.items())

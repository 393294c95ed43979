"""The tenant override editor and the operator's tier-defaults editor.

Both end in `policy.clean_config`, the one validator the API uses too; its field
errors are put back next to the form field they belong to."""

from __future__ import annotations

import json

from django import forms

from agents.guardrails import policy
from agents.guardrails.detectors import ENTITIES

INHERIT = ""
_ACTION_LABELS = {"allow": "Allow", "redact": "Redact", "block": "Block"}


def _entity_field(key: str) -> str:
    return f"entity_{key}"


class OverrideForm(forms.Form):
    """What a tenant admin sets on top of the tier defaults; empty means "use the tier's"."""

    presets = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        choices=[(k, v["label"]) for k, v in policy.PRESETS.items()],
        help_text="Adds to the tier's presets. A preset's actions are a floor: nothing can weaken them.",
    )
    injection = forms.ChoiceField(
        required=False,
        choices=[(INHERIT, "Tier default")] + [(s, s.capitalize()) for s in policy.SENSITIVITIES],
        label="Prompt-injection sensitivity",
    )
    output_pii = forms.ChoiceField(
        required=False,
        choices=[(INHERIT, "Tier default"), ("on", "Check answers for PII"), ("off", "Do not check answers for PII")],
        label="PII in answers",
    )
    blocked_terms = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "placeholder": "one word or phrase per line"}),
        help_text="Whole words; case, accents, spacing and simple leetspeak (b4d w0rd) do not hide them.",
    )
    denied_topics = forms.CharField(
        required=False,
        widget=forms.Textarea(
            attrs={
                "rows": 6,
                "placeholder": "Investment advice: personal financial recommendations\n"
                "- which stocks should I buy\n- is bitcoin a good investment",
            }
        ),  # noqa: E501
        help_text="One topic per block: first line “Name: description”, then one example phrase per line "
        "starting with “-”. Blank line between topics.",
    )
    custom_entities = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": r"employee_id | redact | EMP-\d{6}"}),
        help_text="One per line: name | redact or block | regular expression.",
        label="Custom entities",
    )
    json_schema = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "placeholder": '{"type": "object", "required": ["answer"]}'}),
        label="Required answer format (JSON Schema)",
        help_text="Optional. Answers that do not validate are blocked.",
    )
    block_message = forms.CharField(
        required=False,
        max_length=500,
        widget=forms.Textarea(attrs={"rows": 2}),
        label="Message when blocked",
        help_text="Shown instead of a blocked question or answer. Empty: the tier's (by default, one for each).",
    )
    failure_mode = forms.ChoiceField(
        required=False,
        choices=[
            (INHERIT, "Tier default"),
            ("auto", "Automatic (closed with a compliance preset)"),
            ("closed", "Fail closed: block when the checker fails"),
            ("open", "Fail open: let the turn through"),
        ],
        label="When the guardrail backend fails",
    )

    def __init__(self, *args, tier_defaults: dict | None = None, **kwargs):
        """`tier_defaults`: the tier's merged policy (policy.merge(tier, None)), shown as the defaults."""
        super().__init__(*args, **kwargs)
        tier_defaults = tier_defaults or policy.merge(None, None)
        entity_defaults = tier_defaults["entities"]
        self._label_defaults(tier_defaults)
        for key, label in ENTITIES.items():
            tier_action = entity_defaults.get(key, "allow")
            self.fields[_entity_field(key)] = forms.ChoiceField(
                required=False,
                label=label,
                choices=[(INHERIT, f"Tier default ({_ACTION_LABELS[tier_action]})")]
                + [(a, _ACTION_LABELS[a]) for a in policy.ACTIONS],
            )

    def _label_defaults(self, tier: dict) -> None:
        """Say what "Tier default" means right in the choice, so an admin sees what they override."""
        self.fields["injection"].choices = [(INHERIT, f"Tier default ({tier['injection'].capitalize()})")] + [
            (v, label) for v, label in self.fields["injection"].choices if v
        ]
        output = "check answers" if tier["output_pii"] else "do not check"
        self.fields["output_pii"].choices = [(INHERIT, f"Tier default ({output})")] + [
            (v, label) for v, label in self.fields["output_pii"].choices if v
        ]
        self.fields["failure_mode"].choices = [(INHERIT, f"Tier default (fail {tier['failure_mode']})")] + [
            (v, label) for v, label in self.fields["failure_mode"].choices if v
        ]
        if tier["presets"]:
            names = ", ".join(p.upper() for p in tier["presets"])
            self.fields["presets"].help_text = f"The tier already applies {names}. " + self.fields["presets"].help_text

    def entity_fields(self):
        return [self[_entity_field(key)] for key in ENTITIES]

    @classmethod
    def initial_from(cls, config: dict) -> dict:
        initial = {
            "presets": config.get("presets", []),
            "injection": config.get("injection", INHERIT),
            "output_pii": {True: "on", False: "off"}.get(config.get("output_pii"), INHERIT),
            "blocked_terms": "\n".join(config.get("blocked_terms", [])),
            "denied_topics": "\n\n".join(
                f"{t['name']}: {t.get('description', '')}".rstrip(": ") + "".join(f"\n- {e}" for e in t["examples"])
                for t in config.get("denied_topics", [])
            ),
            "custom_entities": "\n".join(
                f"{c['name']} | {c['action']} | {c['pattern']}" for c in config.get("custom_entities", [])
            ),
            "json_schema": json.dumps(config["json_schema"], indent=2) if config.get("json_schema") else "",
            "block_message": config.get("block_message", ""),
            "failure_mode": config.get("failure_mode", INHERIT),
        }
        for key, action in config.get("entities", {}).items():
            initial[_entity_field(key)] = action
        return initial

    def clean_denied_topics(self):
        topics = []
        for block in [b for b in self.cleaned_data["denied_topics"].replace("\r", "").split("\n\n") if b.strip()]:
            lines = [line.strip() for line in block.split("\n") if line.strip()]
            head, examples = lines[0], [line.lstrip("-• ").strip() for line in lines[1:]]
            name, _, description = head.partition(":")
            topics.append({"name": name.strip(), "description": description.strip(), "examples": examples})
        return topics

    def clean_custom_entities(self):
        entities = []
        for number, line in enumerate(self.cleaned_data["custom_entities"].replace("\r", "").split("\n"), 1):
            if not line.strip():
                continue
            parts = [p.strip() for p in line.split("|", 2)]
            if len(parts) != 3:
                raise forms.ValidationError(f"Line {number}: write name | redact or block | pattern.")
            entities.append({"name": parts[0], "action": parts[1], "pattern": parts[2]})
        return entities

    def clean_json_schema(self):
        raw = self.cleaned_data["json_schema"].strip()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}") from None

    def clean(self):
        """Run the policy's own validation here too, on every field that parsed, so that one save
        reports every invalid field at once (not the JSON first, and the regex after it is fixed).
        The service validates again: this only brings its errors forward."""
        cleaned = super().clean()
        try:
            policy.clean_config(self.to_config(), tenant_override=True)
        except policy.PolicyError as exc:
            self.add_policy_errors(exc.errors)
        return cleaned

    def to_config(self) -> dict:
        """The override the valid fields describe (a field that failed to parse is left out)."""
        data = self.cleaned_data
        config: dict = {}
        if data.get("presets"):
            config["presets"] = data["presets"]
        entities = {key: data[_entity_field(key)] for key in ENTITIES if data.get(_entity_field(key))}
        if entities:
            config["entities"] = entities
        if data.get("injection"):
            config["injection"] = data["injection"]
        if data.get("output_pii"):
            config["output_pii"] = data["output_pii"] == "on"
        terms = [t.strip() for t in data.get("blocked_terms", "").replace("\r", "").split("\n") if t.strip()]
        if terms:
            config["blocked_terms"] = terms
        for key in ("denied_topics", "custom_entities"):
            if data.get(key):
                config[key] = data[key]
        if data.get("json_schema") is not None:
            config["json_schema"] = data["json_schema"]
        if data.get("block_message", "").strip():
            config["block_message"] = data["block_message"]
        if data.get("failure_mode"):
            config["failure_mode"] = data["failure_mode"]
        return config

    def add_policy_errors(self, errors: dict[str, str]) -> None:
        for key, message in errors.items():
            head = key.split(".")[0]
            if head == "entities" and "." in key:
                field = _entity_field(key.split(".")[1])
            else:
                field = head if head in self.fields else None
            parts = key.split(".")
            if len(parts) >= 2 and parts[1].isdigit() and field is not None:
                # custom_entities.0.pattern → "Line 1 (pattern): …", in the words of the textarea
                # (denied topics are blocks of lines, so "Topic 2").
                detail = f" ({parts[2]})" if len(parts) > 2 else ""
                unit = "Topic" if head == "denied_topics" else "Line"
                message = f"{unit} {int(parts[1]) + 1}{detail}: {message}"
            self.add_error(field, message)


class TierPolicyForm(forms.Form):
    """The operator edits a tier's defaults as a JSON document (validated like the API)."""

    config = forms.CharField(widget=forms.Textarea(attrs={"rows": 22, "class": "mono"}), label="Policy (JSON)")

    def clean_config(self):
        try:
            data = json.loads(self.cleaned_data["config"])
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}") from None
        try:
            return policy.clean_config(data)
        except policy.PolicyError as exc:
            raise forms.ValidationError([f"{k}: {v}" for k, v in exc.errors.items()]) from None


class TryForm(forms.Form):
    text = forms.CharField(max_length=20000, widget=forms.Textarea(attrs={"rows": 4}), strip=False)
    stage = forms.ChoiceField(choices=[("input", "As a user message"), ("output", "As an agent answer")])

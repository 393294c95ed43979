"""What a guardrail policy holds, how it is validated, and how the effective policy is merged.

A policy is a plain dict (stored as JSON on the tier's `GuardrailPolicy` and the
tenant's `TenantGuardrailOverride`), validated by `clean_config`. The effective
policy is computed in one place, `merge()`:

    platform BASE  ←  tier defaults  ←  tenant override (only with `custom_guardrails`)
                   then compliance presets as a floor

* Scalars (injection sensitivity, output checks, JSON Schema, block message, failure
  mode, backend) are replaced by the later layer.
* Entity actions are replaced per entity.
* Lists (presets, custom entities, denied topics, blocked terms) are *added*: a tenant
  can tighten its tier's defaults, never remove them.
* A preset's entity actions are a floor: with `hipaa` on, a medical record number is
  at least redacted whatever a layer says (block stays block).
* Which Bedrock guardrail runs (`OPERATOR_ONLY_FIELDS`) is the operator's choice alone: the
  platform's AWS credentials call ApplyGuardrail, so a tenant that could name a guardrail
  id could have them check text against (and reveal the topics of) any guardrail in the
  account — another tenant's included. A tenant may still switch `backend`; without a
  tier guardrail that fails like any unconfigured backend.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from agents.guardrails.detectors import ENTITIES, CustomPatternError, compile_custom
from portal.text import without_nul

ACTIONS = ("allow", "redact", "block")
_STRICTNESS = {"allow": 0, "redact": 1, "block": 2}
SENSITIVITIES = ("off", "low", "medium", "high")
FAILURE_MODES = ("auto", "closed", "open")
BACKENDS = ("builtin", "bedrock")

PRESETS: dict[str, dict[str, Any]] = {
    "hipaa": {
        "label": "HIPAA — health identifiers",
        "entities": {
            "mrn": "redact",
            "date_of_birth": "redact",
            "ssn": "redact",
            "phone": "redact",
            "email": "redact",
            "ip_address": "redact",
        },
    },
    "pci-dss": {
        "label": "PCI DSS — card numbers and security codes",
        # Card numbers are masked; a security code may never be stored at all, so it blocks.
        "entities": {"card": "redact", "cvv": "block"},
    },
    "gdpr": {
        "label": "GDPR — personal identifiers",
        "entities": {
            "email": "redact",
            "phone": "redact",
            "iban": "redact",
            "ip_address": "redact",
            "date_of_birth": "redact",
        },
    },
}

# What a person reads when a guardrail blocks, unless the tier or the tenant chose a message
# (block_message): a blocked question is "this request", a blocked answer is not (block_message()).
DEFAULT_BLOCK_MESSAGE = "This request was blocked by your organisation's guardrails."
DEFAULT_OUTPUT_BLOCK_MESSAGE = "The answer was withheld by your organisation's guardrails."

BASE: dict[str, Any] = {
    "backend": "builtin",
    "bedrock_guardrail_id": "",
    "bedrock_guardrail_version": "DRAFT",
    "presets": [],
    "entities": {key: "allow" for key in ENTITIES} | {"aws_access_key": "redact", "secret": "redact"},
    "custom_entities": [],  # [{"name", "pattern", "action"}]
    "denied_topics": [],  # [{"name", "description", "examples": [...]}]
    "blocked_terms": [],
    "injection": "medium",
    "output_pii": True,
    "json_schema": None,
    "block_message": DEFAULT_BLOCK_MESSAGE,
    "failure_mode": "auto",
}

LIST_FIELDS = ("presets", "custom_entities", "denied_topics", "blocked_terms")
SCALAR_FIELDS = (
    "backend",
    "bedrock_guardrail_id",
    "bedrock_guardrail_version",
    "injection",
    "output_pii",
    "json_schema",
    "block_message",
    "failure_mode",
)
OPERATOR_ONLY_FIELDS = ("bedrock_guardrail_id", "bedrock_guardrail_version")
# An override saved before the operator-only rule still names its guardrail in the database: merge skips it.
TENANT_SCALAR_FIELDS = tuple(key for key in SCALAR_FIELDS if key not in OPERATOR_ONLY_FIELDS)
LIMITS = {"custom_entities": 20, "denied_topics": 30, "blocked_terms": 5000, "examples": 20}


def block_message(config: dict[str, Any], stage: str) -> str:
    """The message shown instead of what a guardrail blocked at `stage` ("input": the person's
    question, "output": the agent's answer). A message the tier or the tenant chose is shown
    for both; the default one speaks of the request, so a blocked answer gets its own."""
    message = config["block_message"]
    if stage == "output" and message == DEFAULT_BLOCK_MESSAGE:
        return DEFAULT_OUTPUT_BLOCK_MESSAGE
    return message


class PolicyError(ValueError):
    """Field → message; forms and the API show these next to the field."""

    def __init__(self, errors: dict[str, str]):
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


def clean_config(data: Any, *, tenant_override: bool = False) -> dict[str, Any]:
    """Validate a partial policy (tier defaults, or a tenant override when `tenant_override`).

    Unknown keys are refused, and so are the operator's own keys in a tenant override."""
    if not isinstance(data, dict):
        raise PolicyError({"non_field_errors": "The policy must be a JSON object."})
    errors: dict[str, str] = {}
    clean: dict[str, Any] = {}
    known = set(BASE) | {"entities"}
    for key in sorted(set(data) - known):
        errors[key] = "Unknown setting."
    if tenant_override:
        for key in sorted(set(data) & set(OPERATOR_ONLY_FIELDS)):
            errors[key] = "Only the platform operator chooses the Bedrock guardrail (in the tier's policy)."
        known -= set(OPERATOR_ONLY_FIELDS)
    for key, value in data.items():
        if key not in known:
            continue
        try:
            clean[key] = _CLEANERS[key](value)
            if without_nul(clean[key]) != clean[key]:
                # PostgreSQL's jsonb cannot store U+0000: refused here rather than failing the save.
                raise ValueError("Null characters are not allowed.")
        except PolicyError as exc:
            errors.update(exc.errors)
        except (TypeError, ValueError) as exc:
            errors[key] = str(exc) or "Invalid value."
    if errors:
        raise PolicyError(errors)
    return clean


def _choice(choices):
    def clean(value):
        if value not in choices:
            raise ValueError(f"Choose one of: {', '.join(choices)}.")
        return value

    return clean


def _bool(value):
    if not isinstance(value, bool):
        raise ValueError("Must be true or false.")
    return value


def _text(limit: int, *, required: bool = False):
    def clean(value):
        if not isinstance(value, str):
            raise ValueError("Must be text.")
        value = value.replace("\x00", "").strip()
        if required and not value:
            raise ValueError("This cannot be empty.")
        if len(value) > limit:
            raise ValueError(f"At most {limit} characters.")
        return value

    return clean


def _presets(value):
    if not isinstance(value, list) or any(p not in PRESETS for p in value):
        raise PolicyError({"presets": f"Choose from: {', '.join(PRESETS)}."})
    return sorted(set(value))


def _entities(value):
    if not isinstance(value, dict):
        raise PolicyError({"entities": "Must map entity names to block, redact or allow."})
    errors = {}
    for key, action in value.items():
        if key not in ENTITIES:
            errors[f"entities.{key}"] = "Unknown entity."
        elif action not in ACTIONS:
            errors[f"entities.{key}"] = "Choose block, redact or allow."
    if errors:
        raise PolicyError(errors)
    return dict(value)


def _custom_entities(value):
    if not isinstance(value, list):
        raise PolicyError({"custom_entities": "Must be a list."})
    if len(value) > LIMITS["custom_entities"]:
        raise PolicyError({"custom_entities": f"At most {LIMITS['custom_entities']} custom entities."})
    # Every line's errors at once: an admin fixing line 1 should not then discover line 3.
    clean, names, errors = [], set(), {}
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            errors[f"custom_entities.{i}"] = "Each entity needs a name, a pattern and an action."
            continue
        name = str(item.get("name", "")).strip()
        if not name or len(name) > 40 or not all(c.isalnum() or c in "-_" for c in name):
            errors[f"custom_entities.{i}.name"] = "Use 1–40 letters, digits, - or _."
        elif name in names:
            errors[f"custom_entities.{i}.name"] = f"{name} is listed twice."
        names.add(name)
        action = item.get("action", "redact")
        if action not in ("redact", "block"):
            errors[f"custom_entities.{i}.action"] = "Choose block or redact."
        try:
            compile_custom(item.get("pattern"))
        except CustomPatternError as exc:
            errors[f"custom_entities.{i}.pattern"] = str(exc)
        clean.append({"name": name, "pattern": item.get("pattern"), "action": action})
    if errors:
        raise PolicyError(errors)
    return clean


def _denied_topics(value):
    if not isinstance(value, list):
        raise PolicyError({"denied_topics": "Must be a list."})
    if len(value) > LIMITS["denied_topics"]:
        raise PolicyError({"denied_topics": f"At most {LIMITS['denied_topics']} topics."})
    clean, errors = [], {}
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            errors[f"denied_topics.{i}"] = "Each topic needs a name and example phrases."
            continue
        try:
            name = _text(80, required=True)(item.get("name", ""))
        except ValueError as exc:
            errors[f"denied_topics.{i}.name"] = str(exc)
        try:
            description = _text(500)(item.get("description", "") or "")
        except ValueError as exc:
            errors[f"denied_topics.{i}.description"] = str(exc)
        examples = item.get("examples", [])
        if not isinstance(examples, list) or not all(isinstance(e, str) for e in examples):
            errors[f"denied_topics.{i}.examples"] = "Must be a list of phrases."
            continue
        examples = [e.strip()[:300] for e in examples if e.strip()][: LIMITS["examples"]]
        if not examples:
            errors[f"denied_topics.{i}.examples"] = "Give at least one example phrase."
        if not errors:
            clean.append({"name": name, "description": description, "examples": examples})
    if errors:
        raise PolicyError(errors)
    return clean


def _blocked_terms(value):
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise PolicyError({"blocked_terms": "Must be a list of words or phrases."})
    terms = list(dict.fromkeys(t.strip()[:100] for t in value if t.strip()))
    if len(terms) > LIMITS["blocked_terms"]:
        raise PolicyError({"blocked_terms": f"At most {LIMITS['blocked_terms']} terms."})
    return terms


def _json_schema(value):
    if value in (None, "", {}):
        return None
    if not isinstance(value, dict):
        raise ValueError("Must be a JSON Schema object (or empty).")
    import jsonschema

    try:
        jsonschema.Draft202012Validator.check_schema(value)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"Not a valid JSON Schema: {exc.message}") from None
    if len(json.dumps(value)) > 20000:
        raise ValueError("The schema is too large (20 kB at most).")
    return value


_CLEANERS = {
    "backend": _choice(BACKENDS),
    "bedrock_guardrail_id": _text(200),
    "bedrock_guardrail_version": _text(20),
    "presets": _presets,
    "entities": _entities,
    "custom_entities": _custom_entities,
    "denied_topics": _denied_topics,
    "blocked_terms": _blocked_terms,
    "injection": _choice(SENSITIVITIES),
    "output_pii": _bool,
    "json_schema": _json_schema,
    "block_message": _text(500, required=True),
    "failure_mode": _choice(FAILURE_MODES),
}


def strictest(a: str, b: str) -> str:
    return a if _STRICTNESS[a] >= _STRICTNESS[b] else b


def merge(tier_config: dict | None, override: dict | None) -> dict[str, Any]:
    """The effective policy (see the module docstring for the rules)."""
    effective = copy.deepcopy(BASE)
    for layer, scalars in ((tier_config or {}, SCALAR_FIELDS), (override or {}, TENANT_SCALAR_FIELDS)):
        for key in scalars:
            if key in layer:
                effective[key] = copy.deepcopy(layer[key])
        effective["entities"].update(layer.get("entities", {}))
        for key in LIST_FIELDS:
            for item in layer.get(key, []):
                if item not in effective[key]:
                    effective[key].append(copy.deepcopy(item))
    for preset in effective["presets"]:
        for entity, action in PRESETS[preset]["entities"].items():
            effective["entities"][entity] = strictest(effective["entities"][entity], action)
    if effective["failure_mode"] == "auto":
        # Compliance presets are the premium promise: when the checker is down, nothing passes.
        effective["failure_mode"] = "closed" if effective["presets"] else "open"
    return effective


def preset_floor(presets: list[str]) -> dict[str, str]:
    floor: dict[str, str] = {}
    for preset in presets:
        for entity, action in PRESETS[preset]["entities"].items():
            floor[entity] = strictest(floor.get(entity, "allow"), action)
    return floor

"""Entitlements, computed in one place.

effective = tier.default_features ∪ tenant.feature_grants − tenant.feature_revocations

Later rooms (chat, knowledge, guardrails, tools) ask `has_feature(tenant, key)`
instead of reading tier or tenant fields themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tenants.models import Tenant

FEATURES: dict[str, str] = {
    "chat": "Chat with the tenant's agents",
    "api_access": "REST API access with API clients",
    "knowledge_bases": "Knowledge bases and retrieval",
    "custom_guardrails": "Tenant-tuned guardrail policies",
    "tools": "Agent tools through the gateway",
    "memory": "Long-term agent memory",
    "sso": "Enterprise single sign-on (OpenID Connect)",
    "audit_export": "Export of the audit log",
    "fine_tuned_models": "The tenant's own fine-tuned models",
    "dedicated_runtime": "Dedicated agent runtime (silo)",
    "priority_support": "Priority support",
}


def unknown_features(keys: Iterable[str] | object) -> set[str]:
    if not isinstance(keys, list | tuple | set | frozenset):
        return {"<not a list>"}
    return {k for k in keys if k not in FEATURES}


@dataclass(frozen=True)
class Limits:
    requests_per_minute: int
    tokens_per_minute: int
    concurrent_sessions: int
    included_tokens: int
    knowledge_storage_mb: int


def effective_entitlements(tenant: Tenant) -> frozenset[str]:
    tier_features = set(tenant.tier.default_features or [])
    return frozenset((tier_features | set(tenant.feature_grants or [])) - set(tenant.feature_revocations or []))


def has_feature(tenant: Tenant, key: str) -> bool:
    if key not in FEATURES:
        raise ValueError(f"Unknown feature {key!r}")
    return key in effective_entitlements(tenant)


def effective_limits(tenant: Tenant) -> Limits:
    tier = tenant.tier
    return Limits(
        requests_per_minute=tier.requests_per_minute,
        tokens_per_minute=tier.tokens_per_minute,
        concurrent_sessions=tier.concurrent_sessions,
        included_tokens=tier.included_tokens,
        knowledge_storage_mb=tier.knowledge_storage_mb,
    )


def describe(tenant: Tenant) -> list[dict]:
    """Every feature with where its state comes from, for the admin screen and API."""
    tier_features = set(tenant.tier.default_features or [])
    grants = set(tenant.feature_grants or [])
    revocations = set(tenant.feature_revocations or [])
    effective = effective_entitlements(tenant)
    rows = []
    for key, label in FEATURES.items():
        if key in revocations:
            source = "revoked"
        elif key in grants and key not in tier_features:
            source = "granted"
        elif key in tier_features:
            source = "tier"
        else:
            source = "not included"
        rows.append({"key": key, "label": label, "enabled": key in effective, "source": source})
    return rows

from django.conf import settings

from tenants import entitlements
from tenants.roles import Action, can


def navigation(request):
    """What the shell needs on every page: the current tenant, role and the switcher."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    from tenants.views import my_tenants

    membership = getattr(request, "membership", None)
    role = membership.role if membership is not None else None
    tenant = getattr(request, "tenant", None)
    return {
        "current_tenant": tenant,
        "current_membership": membership,
        "my_memberships": my_tenants(user),
        "support_email": settings.SUPPORT_EMAIL,  # the suspended page and cards (SUPPORT_EMAIL)
        "nav": {
            "members": can(role, Action.VIEW_MEMBERS),
            "audit": can(role, Action.VIEW_AUDIT_LOG),
            "api_clients": can(role, Action.MANAGE_API_CLIENTS),
            "agents": can(role, Action.MANAGE_AGENTS),
            "security": can(role, Action.MANAGE_SECURITY),
            "sso": can(role, Action.MANAGE_SSO),
            "sso_in_tier": tenant is not None and entitlements.has_feature(tenant, "sso"),
            "chat": can(role, Action.USE_AGENTS),
            "knowledge": can(role, Action.MANAGE_KNOWLEDGE),
            "tools": can(role, Action.MANAGE_AGENTS)
            and tenant is not None
            and entitlements.has_feature(tenant, "tools"),
            "memory": can(role, Action.USE_AGENTS)
            and tenant is not None
            and entitlements.has_feature(tenant, "memory"),
            "billing": can(role, Action.VIEW_BILLING),
            "guardrails": can(role, Action.VIEW_GUARDRAILS),
        },
    }

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from agents import api as agents_api
from agents.guardrails import api as guardrails_api
from agents.knowledge import api as knowledge_api
from agents.memory import api as memory_api
from agents.registry import api as registry_api
from agents.registry import operator_api as registry_operator_api
from agents.skills import api as skills_api
from agents.skills import operator_api as skills_operator_api
from agents.tools import api as tools_api
from agents.tools import tenant_api as tools_tenant_api
from billing import api as billing_api
from portal import views
from portal.operator import billing_api as operator_billing_api
from tenants import api as tenants_api
from tenants import views as tenants_views
from tenants.identity import sso_views
from tenants.identity import views as identity_views

router = SimpleRouter()
router.register("tenants", tenants_api.TenantViewSet, basename="tenant")
router.register(
    "operator/billing/tenants", operator_billing_api.TenantBillingViewSet, basename="operator-billing-tenant"
)
router.register("operator/invoices", operator_billing_api.OperatorInvoiceViewSet, basename="operator-invoice")
router.register(
    "operator/registry/agents", registry_operator_api.OperatorRegistryAgentViewSet, basename="operator-registry-agent"
)
router.register(
    "operator/registry/versions",
    registry_operator_api.OperatorRegistryVersionViewSet,
    basename="operator-registry-version",
)
router.register("operator/skills", skills_operator_api.OperatorSkillViewSet, basename="operator-skill")
tenant_router = SimpleRouter()
tenant_router.register("members", tenants_api.MemberViewSet, basename="member")
tenant_router.register("invitations", tenants_api.InvitationViewSet, basename="invitation")
tenant_router.register("audit-log", tenants_api.AuditLogViewSet, basename="audit-log")
tenant_router.register("agents", agents_api.AgentViewSet, basename="agent")
tenant_router.register("conversations", agents_api.ConversationViewSet, basename="conversation")
tenant_router.register("invocations", agents_api.InvocationViewSet, basename="invocation")
tenant_router.register("knowledge-bases", knowledge_api.KnowledgeBaseViewSet, basename="knowledge-base")
tenant_router.register("knowledge-documents", knowledge_api.DocumentViewSet, basename="knowledge-document")
tenant_router.register("guardrails/policy", guardrails_api.GuardrailPolicyViewSet, basename="guardrail-policy")
tenant_router.register("guardrails/events", guardrails_api.GuardrailEventViewSet, basename="guardrail-event")
tenant_router.register("registry/agents", registry_api.RegistryAgentViewSet, basename="registry-agent")
tenant_router.register("registry/versions", registry_api.RegistryVersionViewSet, basename="registry-version")
tenant_router.register("skills", skills_api.SkillViewSet, basename="skill")
tenant_router.register("agent-skills", skills_api.AgentSkillViewSet, basename="agent-skill")
tenant_router.register("usage", billing_api.UsageViewSet, basename="usage")
tenant_router.register("invoices", billing_api.InvoiceViewSet, basename="invoice")
tenant_router.register("agent-tools", tools_tenant_api.AgentToolsViewSet, basename="agent-tools")
tenant_router.register("memories", memory_api.MemoryViewSet, basename="memory")
tenant_router.register("memory-members", memory_api.MemoryMemberViewSet, basename="memory-member")

api_v1 = [
    path("", include(router.urls)),
    path("tenants/<str:tenant_slug>/", include(tenant_router.urls)),
    path("gateway/knowledge/retrieve", knowledge_api.KnowledgeGatewayView.as_view(), name="knowledge-gateway-retrieve"),
    path("gateway/tools/invoke", tools_api.ToolGatewayView.as_view(), name="tools-gateway-invoke"),
    path("gateway/mcp", tools_api.McpGatewayView.as_view(), name="mcp-gateway"),
]
api_v1 += memory_api.gateway_urls

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path(".well-known/jwks.json", identity_views.jwks, name="jwks"),
    path(
        ".well-known/oauth-authorization-server",
        identity_views.authorization_server_metadata,
        name="oauth_metadata",
    ),
    path("oauth/token", identity_views.token, name="oauth_token"),
    path("readyz", views.readyz, name="readyz"),
    # Enterprise SSO: the email → IdP step and the callback the tenant registers at its IdP.
    path("accounts/sso/", sso_views.start, name="sso_start"),
    path("accounts/sso/<str:provider_id>/callback/", sso_views.callback, name="sso_callback"),
    # Before allauth's own: an address must be confirmed before it becomes the account's.
    path("accounts/email/", identity_views.EmailView.as_view(), name="account_email"),
    path("accounts/", include("allauth.urls")),
    path("invitations/<str:token>/", tenants_views.invitation_accept, name="invitation_accept"),
    path("t/<str:tenant_slug>/", include("tenants.urls")),
    path("t/<str:tenant_slug>/chat/", include("agents.urls")),
    path("t/<str:tenant_slug>/knowledge/", include("agents.knowledge.urls")),
    path("t/<str:tenant_slug>/memory/", include("agents.memory.urls")),
    path("t/<str:tenant_slug>/guardrails/", include("agents.guardrails.urls")),
    path("t/<str:tenant_slug>/tools/", include("agents.tools.urls")),
    path("t/<str:tenant_slug>/catalogue/", include("agents.registry.urls")),
    path("t/<str:tenant_slug>/skills/", include("agents.skills.urls")),
    path("t/<str:tenant_slug>/billing/", include("billing.urls")),
    path("operator/guardrails/", include("agents.guardrails.operator_urls")),
    path("operator/tools/", include("agents.tools.operator_urls")),
    path("operator/skills/", include("agents.skills.operator_urls")),
    path("operator/agents/", include("agents.registry.operator_urls")),
    path("operator/", include("portal.operator.urls")),
    path("admin/", admin.site.urls),
    path("api/v1/", include((api_v1, "api"), namespace="api")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api_schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api_schema"), name="api_docs"),
]

handler400 = "portal.views.error_400"
handler403 = "portal.views.error_403"
handler404 = "portal.views.error_404"
handler500 = "portal.views.error_500"

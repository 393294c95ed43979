"""Identity screens of a tenant, included by tenants/urls.py (so under /t/<tenant_slug>/, names in "tenants:")."""

from django.urls import path

from tenants.identity import screens

urlpatterns = [
    path("api-clients/", screens.api_clients, name="api_clients"),
    path("api-clients/new/", screens.api_client_create, name="api_client_create"),
    path("api-clients/<int:client_id>/", screens.api_client, name="api_client"),
    path("api-clients/<int:client_id>/revoke/", screens.api_client_revoke, name="api_client_revoke"),
    path("api-clients/<int:client_id>/take-over/", screens.api_client_take_over, name="api_client_take_over"),
    path("agents/", screens.agents, name="agents"),
    path("agents/new/", screens.agent_create, name="agent_create"),
    path("agents/<int:agent_id>/allow/", screens.agent_allow, name="agent_allow"),
    path("agents/<int:agent_id>/disallow/", screens.agent_disallow, name="agent_disallow"),
    path("agents/<int:agent_id>/rotate/", screens.agent_rotate, name="agent_rotate"),
    path("security/", screens.security, name="security"),
]

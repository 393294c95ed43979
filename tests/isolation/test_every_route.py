"""Every URL pattern and API route, tried by a member of another tenant.

The test walks the project's URL resolver, so a new route is picked up
automatically, and it *fails* for any route it does not know how to exercise:
add the route to ROUTES below, saying what kind it is, before it can ship.

The actor is the owner of tenant A. For each route that names a tenant or an
object, A's owner asks for tenant B's (by B's slug, or by B's object ids under
A's own slug) and must get 404 (403 where noted) with none of B's data in the
answer; lists answered to A contain none of B's rows; operator and admin pages
answer non-staff with 404 or a login redirect.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from agents.guardrails.models import GuardrailEvent, TenantGuardrailOverride
from agents.knowledge.models import Chunk, Document, KnowledgeBase
from agents.models import Conversation, Invocation, Message
from billing.models import Invoice
from tenants.context import tenant_context
from tenants.identity.models import AgentGrant, AgentIdentity, ApiClient
from tenants.models import AuditLog, Invitation, Membership
from tests import factories
from tests.agents.helpers import make_catalogue, make_turn
from tests.knowledge.helpers import make_knowledge_rows

# Text that identifies tenant B; none of it may reach A's owner.
FOREIGN_MARKERS = ("bravo.test", "Bravo Inc", "secret-bravo-invitee")


@dataclass(frozen=True)
class Route:
    path: str
    name: str | None
    module: str


def walk(patterns, prefix="", namespace=None):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            ns = namespace
            if pattern.namespace:
                ns = f"{namespace}:{pattern.namespace}" if namespace else pattern.namespace
            yield from walk(pattern.url_patterns, prefix + str(pattern.pattern), ns)
        elif isinstance(pattern, URLPattern):
            name = f"{namespace}:{pattern.name}" if namespace and pattern.name else pattern.name
            yield Route(prefix + str(pattern.pattern), name, pattern.callback.__module__)


def all_routes() -> list[Route]:
    return list(walk(get_resolver().url_patterns))


# --- how to exercise each kind of route ----------------------------------------------


@dataclass(frozen=True)
class TenantScoped:
    """A route under a tenant slug: B's slug, or B's objects under A's slug, are 404."""

    methods: tuple[str, ...] = ("GET",)
    objects: dict[str, str] = field(default_factory=dict)  # url kwarg → which of B's objects
    api: bool = False
    lists: bool = False  # answered with A's rows: check none of B's appear


@dataclass(frozen=True)
class OperatorOnly:
    methods: tuple[str, ...] = ("GET",)
    kwargs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CallerScoped:
    """Answers about the caller only (their tenants); B's slug is 404, lists hold no B rows."""

    kwargs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NoTenantData:
    """Public or account pages that hold no tenant data at all (still checked for B's markers)."""

    kwargs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Capability:
    """A link whose secret is the credential (invitations): a forged or foreign-tenant token is 404."""


ROUTES: dict[str, object] = {
    "home": NoTenantData(),
    "healthz": NoTenantData(),
    "readyz": NoTenantData(),
    "api_schema": NoTenantData(),
    "api_docs": NoTenantData(),
    "invitation_accept": Capability(),
    # token service: public keys and metadata; the token endpoint is exercised
    # for cross-tenant abuse in tests/identity (tokens for A on B's routes, exchange by
    # an agent B does not allow).
    "jwks": NoTenantData(),
    "oauth_metadata": NoTenantData(),
    "oauth_token": NoTenantData(),
    # allauth's email page, wrapped so an unconfirmed address cannot become primary
    "account_email": NoTenantData(),
    # tenant admin screens
    "tenants:overview": TenantScoped(),
    "tenants:members": TenantScoped(lists=True),
    "tenants:member_invite": TenantScoped(methods=("POST",)),
    "tenants:member_change_role": TenantScoped(methods=("POST",), objects={"membership_id": "membership"}),
    "tenants:member_remove": TenantScoped(methods=("POST",), objects={"membership_id": "membership"}),
    "tenants:invitation_resend": TenantScoped(methods=("POST",), objects={"invitation_id": "invitation"}),
    "tenants:invitation_revoke": TenantScoped(methods=("POST",), objects={"invitation_id": "invitation"}),
    "tenants:audit_log": TenantScoped(lists=True),
    "tenants:audit_export": TenantScoped(lists=True),
    # identity screens: API clients, agent identities, sign-in security
    "tenants:api_clients": TenantScoped(lists=True),
    "tenants:api_client_create": TenantScoped(methods=("POST",)),
    "tenants:api_client": TenantScoped(objects={"client_id": "api_client"}),
    "tenants:api_client_revoke": TenantScoped(methods=("POST",), objects={"client_id": "api_client"}),
    "tenants:api_client_take_over": TenantScoped(methods=("POST",), objects={"client_id": "api_client"}),
    "tenants:agents": TenantScoped(lists=True),
    "tenants:agent_create": TenantScoped(methods=("POST",)),
    "tenants:agent_allow": TenantScoped(methods=("POST",), objects={"agent_id": "agent_identity"}),
    "tenants:agent_disallow": TenantScoped(methods=("POST",), objects={"agent_id": "agent_identity"}),
    "tenants:agent_rotate": TenantScoped(methods=("POST",), objects={"agent_id": "agent_identity"}),
    "tenants:security": TenantScoped(methods=("GET", "POST")),
    "tenants:sso_settings": TenantScoped(methods=("GET", "POST")),
    "tenants:sso_disable": TenantScoped(methods=("POST",)),
    "tenants:sso_verify_domain": TenantScoped(methods=("POST",)),
    # enterprise SSO sign-in: the email → IdP step and the IdP callback (tests/identity/test_sso.py)
    "sso_start": NoTenantData(),
    "sso_callback": NoTenantData(),
    # chat: a member's own conversations and turns; anyone else's (teammate or tenant B) are 404
    "agents:chat": TenantScoped(lists=True),
    "agents:conversation_new": TenantScoped(methods=("POST",)),
    "agents:conversation": TenantScoped(objects={"conversation_id": "conversation"}),
    "agents:message_post": TenantScoped(methods=("POST",), objects={"conversation_id": "conversation"}),
    "agents:conversation_rename": TenantScoped(methods=("POST",), objects={"conversation_id": "conversation"}),
    "agents:conversation_delete": TenantScoped(methods=("POST",), objects={"conversation_id": "conversation"}),
    "agents:turn_events": TenantScoped(objects={"invocation_id": "invocation"}),
    "agents:turn_cancel": TenantScoped(methods=("POST",), objects={"invocation_id": "invocation"}),
    "agents:turn_retry": TenantScoped(methods=("POST",), objects={"invocation_id": "invocation"}),
    "agents:message_fragment": TenantScoped(objects={"message_id": "message"}),
    "agents:message_feedback": TenantScoped(methods=("POST",), objects={"message_id": "message"}),
    # billing limits and budget (billing.views_limits)
    "billing:limits": TenantScoped(lists=True),
    "billing:budget_save": TenantScoped(methods=("POST",)),
    "billing:user_limit_save": TenantScoped(methods=("POST",), objects={"membership_id": "membership"}),
    # usage dashboard, CSV export, raw-event drill-down, invoices (billing.views) and their API
    "billing:dashboard": TenantScoped(),
    "billing:export_csv": TenantScoped(),
    "billing:events": TenantScoped(lists=True),
    "billing:invoices": TenantScoped(lists=True),
    "billing:invoice": TenantScoped(objects={"invoice_id": "invoice"}),
    "billing:invoice_export": TenantScoped(objects={"invoice_id": "invoice"}),
    "api:usage-summary": TenantScoped(api=True),
    "api:usage-timeseries": TenantScoped(api=True),
    "api:usage-breakdown": TenantScoped(api=True),
    "api:invoice-list": TenantScoped(api=True, lists=True),
    "api:invoice-detail": TenantScoped(api=True, objects={"pk": "invoice"}),
    # REST API
    "api:tenant-list": CallerScoped(),
    "api:tenant-detail": CallerScoped(kwargs={"slug": "tenant_b_slug"}),
    "api:member-list": TenantScoped(api=True, lists=True, methods=("GET",)),
    "api:member-detail": TenantScoped(api=True, methods=("GET", "PATCH", "DELETE"), objects={"pk": "membership"}),
    "api:invitation-list": TenantScoped(api=True, lists=True, methods=("GET", "POST")),
    "api:invitation-detail": TenantScoped(api=True, methods=("GET", "DELETE"), objects={"pk": "invitation"}),
    "api:invitation-resend": TenantScoped(api=True, methods=("POST",), objects={"pk": "invitation"}),
    "api:audit-log-list": TenantScoped(api=True, lists=True),
    "api:agent-list": TenantScoped(api=True, lists=True),
    "api:conversation-list": TenantScoped(api=True, lists=True, methods=("GET", "POST")),
    "api:conversation-detail": TenantScoped(
        api=True, methods=("GET", "PATCH", "DELETE"), objects={"pk": "conversation"}
    ),
    "api:conversation-messages": TenantScoped(api=True, methods=("GET", "POST"), objects={"pk": "conversation"}),
    "api:invocation-detail": TenantScoped(api=True, objects={"pk": "invocation"}),
    "api:invocation-events": TenantScoped(api=True, objects={"pk": "invocation"}),
    "api:invocation-cancel": TenantScoped(api=True, methods=("POST",), objects={"pk": "invocation"}),
    "api:invocation-retry": TenantScoped(api=True, methods=("POST",), objects={"pk": "invocation"}),
    # guardrails: the admin page, override editor, try-it console, events; the API
    "guardrails:overview": TenantScoped(lists=True),
    "guardrails:policy_save": TenantScoped(methods=("POST",)),
    "guardrails:try_it": TenantScoped(methods=("POST",)),
    "guardrails:event_false_positive": TenantScoped(methods=("POST",), objects={"event_id": "guardrail_event"}),
    "api:guardrail-policy-list": TenantScoped(api=True),
    "api:guardrail-policy-override": TenantScoped(api=True, methods=("GET", "PUT")),
    "api:guardrail-event-list": TenantScoped(api=True, lists=True),
    "api:guardrail-event-detail": TenantScoped(api=True, objects={"pk": "guardrail_event"}),
    "api:guardrail-event-false-positive": TenantScoped(api=True, methods=("POST",), objects={"pk": "guardrail_event"}),
    # knowledge bases: admin screens, the document and passage pages chat citations link to, the API
    "knowledge:home": TenantScoped(lists=True),
    "knowledge:create": TenantScoped(methods=("POST",)),
    "knowledge:detail": TenantScoped(objects={"kb_id": "knowledge_base"}),
    "knowledge:edit": TenantScoped(methods=("POST",), objects={"kb_id": "knowledge_base"}),
    "knowledge:delete": TenantScoped(methods=("POST",), objects={"kb_id": "knowledge_base"}),
    "knowledge:upload": TenantScoped(methods=("POST",), objects={"kb_id": "knowledge_base"}),
    "knowledge:documents": TenantScoped(objects={"kb_id": "knowledge_base"}),
    "knowledge:search": TenantScoped(objects={"kb_id": "knowledge_base"}),
    "knowledge:agent_knowledge": TenantScoped(methods=("POST",)),
    "knowledge:document": TenantScoped(objects={"document_id": "knowledge_document"}),
    "knowledge:document_delete": TenantScoped(methods=("POST",), objects={"document_id": "knowledge_document"}),
    "knowledge:document_reindex": TenantScoped(methods=("POST",), objects={"document_id": "knowledge_document"}),
    "knowledge:passage": TenantScoped(objects={"chunk_id": "knowledge_chunk"}),
    "api:knowledge-base-list": TenantScoped(api=True, lists=True, methods=("GET", "POST")),
    "api:knowledge-base-detail": TenantScoped(
        api=True, methods=("GET", "PATCH", "DELETE"), objects={"pk": "knowledge_base"}
    ),
    "api:knowledge-base-search": TenantScoped(api=True, methods=("POST",), objects={"pk": "knowledge_base"}),
    "api:knowledge-document-list": TenantScoped(api=True, lists=True, methods=("GET", "POST")),
    "api:knowledge-document-detail": TenantScoped(
        api=True, methods=("GET", "DELETE"), objects={"pk": "knowledge_document"}
    ),
    # the retrieval gateway of agent runtimes: no tenant slug, the tenant is the act-on-behalf
    # token's (cross-tenant tokens, scopes and any k: tests/knowledge/test_gateway.py)
    "api:knowledge-gateway-retrieve": NoTenantData(),
    # tools: the tenant admin's choice per agent (B's own agent under A's slug is 404), the
    # operator's registry, and the tools gateway of agent runtimes (no tenant slug: the tenant is
    # the act-on-behalf token's; A's token against B's tools and B's usage: tests/tools/test_gateway.py)
    "tools:home": TenantScoped(lists=True),
    "tools:agent_tools": TenantScoped(methods=("POST",), objects={"agent_id": "agent"}),
    "tools_operator:tools": OperatorOnly(),
    "tools_operator:tool_create": OperatorOnly(methods=("GET", "POST")),
    "tools_operator:tool_edit": OperatorOnly(methods=("GET", "POST"), kwargs={"key": "tool_key"}),
    "api:tools-gateway-invoke": NoTenantData(),
    # the same choice over the API: B's own agent under A's slug is 404 (tests/tools/test_tenant_api.py)
    "api:agent-tools-list": TenantScoped(api=True, lists=True),
    "api:agent-tools-detail": TenantScoped(api=True, methods=("GET", "PUT"), objects={"pk": "agent"}),
    # the same gateway over MCP (A's token lists and calls only A's tools: tests/tools/test_mcp.py)
    "api:mcp-gateway": NoTenantData(),
    # skills: the tenant's page (every member looks, admins change), its own skills (B's under
    # A's slug is 404), each agent's choice, the operator's shared skills, and the same over the API
    "skills:home": TenantScoped(lists=True),
    "skills:skill_create": TenantScoped(methods=("GET", "POST")),
    "skills:skill_edit": TenantScoped(methods=("GET", "POST"), objects={"skill_id": "skill"}),
    "skills:agent_skills": TenantScoped(methods=("POST",), objects={"agent_id": "agent"}),
    "skills_operator:skills": OperatorOnly(),
    "skills_operator:skill_create": OperatorOnly(methods=("GET", "POST")),
    "skills_operator:skill_edit": OperatorOnly(methods=("GET", "POST"), kwargs={"key": "skill_key"}),
    "api:skill-list": TenantScoped(api=True, lists=True, methods=("GET", "POST")),
    "api:skill-detail": TenantScoped(api=True, methods=("PATCH",), objects={"pk": "skill"}),
    "api:agent-skill-list": TenantScoped(api=True, lists=True),
    "api:agent-skill-detail": TenantScoped(api=True, methods=("PUT",), objects={"pk": "agent"}),
    # memory: a member's own memories; counts per member and clearing for admins; the memory
    # gateway of agent runtimes takes the tenant from the act-on-behalf token (tests/memory)
    "memory:home": TenantScoped(lists=True),
    "memory:delete": TenantScoped(methods=("POST",), objects={"record_id": "memory_record"}),
    "memory:clear": TenantScoped(methods=("POST",), objects={"membership_id": "membership"}),
    # the tenant's shared memory: owners and admins add and delete (B's shared record: tests/memory)
    "memory:shared_add": TenantScoped(methods=("POST",)),
    "memory:shared_delete": TenantScoped(methods=("POST",), objects={"record_id": "memory_record"}),
    # the same over the API: one's own and the shared memories (B's record under A's slug is 404,
    # B's member's counts and clearing too; tenant B against A by id: tests/memory/test_api.py)
    "api:memory-list": TenantScoped(api=True, lists=True, methods=("GET", "POST")),
    "api:memory-detail": TenantScoped(api=True, methods=("DELETE",), objects={"pk": "memory_record"}),
    "api:memory-member-list": TenantScoped(api=True, lists=True),
    "api:memory-member-detail": TenantScoped(api=True, objects={"pk": "membership"}),
    "api:memory-member-clear": TenantScoped(api=True, methods=("POST",), objects={"pk": "membership"}),
    "api:memory-gateway-recall": NoTenantData(),
    "api:memory-gateway-remember": NoTenantData(),
    # agent registry: the catalogue, a tenant's own agents and their versions (B's under A's slug
    # are 404), the operators' shared agents, and the API (tests/registry)
    "registry:catalogue": TenantScoped(lists=True),
    "registry:agent_new": TenantScoped(methods=("GET", "POST")),
    "registry:agent": TenantScoped(objects={"agent_id": "agent"}),
    "registry:version_new": TenantScoped(methods=("GET", "POST"), objects={"agent_id": "agent"}),
    **{
        f"registry:version_{verb}": TenantScoped(
            methods=("POST",), objects={"agent_id": "agent", "number": "agent_version_number"}
        )
        for verb in ("submit", "approve", "reject", "roll_back")
    },
    "registry_operator:agents": OperatorOnly(),
    "registry_operator:agent_new": OperatorOnly(methods=("GET", "POST")),
    "registry_operator:agent": OperatorOnly(kwargs={"agent_id": "shared_agent_id"}),
    "registry_operator:version_new": OperatorOnly(methods=("GET", "POST"), kwargs={"agent_id": "shared_agent_id"}),
    **{
        f"registry_operator:version_{verb}": OperatorOnly(
            methods=("POST",), kwargs={"agent_id": "shared_agent_id", "number": "shared_version_number"}
        )
        for verb in ("submit", "approve", "reject", "roll_back")
    },
    "api:registry-agent-list": TenantScoped(api=True, lists=True, methods=("GET", "POST")),
    "api:registry-agent-versions": TenantScoped(api=True, methods=("GET", "POST"), objects={"pk": "agent"}),
    "api:registry-version-detail": TenantScoped(api=True, objects={"pk": "agent_version"}),
    **{
        f"api:registry-version-{verb}": TenantScoped(api=True, methods=("POST",), objects={"pk": "agent_version"})
        for verb in ("submit", "approve", "reject", "roll-back")
    },
    # operator console
    "operator:tenants": OperatorOnly(),
    "operator:tenant_create": OperatorOnly(methods=("GET", "POST")),
    "operator:tenant_detail": OperatorOnly(methods=("GET", "POST"), kwargs={"slug": "tenant_b_slug"}),
    "operator:tenant_suspend": OperatorOnly(methods=("POST",), kwargs={"slug": "tenant_b_slug"}),
    "operator:tenant_reactivate": OperatorOnly(methods=("POST",), kwargs={"slug": "tenant_b_slug"}),
    "operator:tenant_api_client_revoke": OperatorOnly(
        methods=("POST",), kwargs={"slug": "tenant_b_slug", "client_id": "b_api_client_id"}
    ),
    "operator:tenant_invite_owner": OperatorOnly(methods=("POST",), kwargs={"slug": "tenant_b_slug"}),
    "operator:tenant_invitation_resend": OperatorOnly(
        methods=("POST",), kwargs={"slug": "tenant_b_slug", "invitation_id": "b_invitation_id"}
    ),
    "operator:tenant_invitation_revoke": OperatorOnly(
        methods=("POST",), kwargs={"slug": "tenant_b_slug", "invitation_id": "b_invitation_id"}
    ),
    "operator:tenant_sso_disable": OperatorOnly(methods=("POST",), kwargs={"slug": "tenant_b_slug"}),
    "operator:tenant_sso_verify_domain": OperatorOnly(methods=("POST",), kwargs={"slug": "tenant_b_slug"}),
    "operator:tiers": OperatorOnly(),
    "operator:tier_create": OperatorOnly(methods=("GET", "POST")),
    "operator:tier_edit": OperatorOnly(methods=("GET", "POST"), kwargs={"slug": "tier_slug"}),
    "operator:audit_log": OperatorOnly(),
    "operator:audit_export": OperatorOnly(),
    "operator:agent_identities": OperatorOnly(),
    "operator:agent_identity_create": OperatorOnly(methods=("POST",)),
    "operator:agent_identity_rotate": OperatorOnly(methods=("POST",), kwargs={"agent_id": "agent_b_id"}),
    "operator:agent_identity_disable": OperatorOnly(methods=("POST",), kwargs={"agent_id": "agent_b_id"}),
    "operator:agent_identity_enable": OperatorOnly(methods=("POST",), kwargs={"agent_id": "agent_b_id"}),
    # operator billing: revenue, cost and margin per tenant; invoices (portal/operator/billing_views.py)
    "operator:billing": OperatorOnly(),
    "operator:billing_tenant": OperatorOnly(kwargs={"slug": "tenant_b_slug"}),
    "operator:billing_invoices": OperatorOnly(),
    "operator:billing_invoices_draft": OperatorOnly(methods=("POST",)),
    "operator:billing_invoices_finalise_ready": OperatorOnly(methods=("POST",)),
    "operator:billing_invoices_export": OperatorOnly(),
    "operator:billing_invoice": OperatorOnly(kwargs={"invoice_id": "b_invoice_id"}),
    "operator:billing_invoice_finalise": OperatorOnly(methods=("POST",), kwargs={"invoice_id": "b_invoice_id"}),
    "operator:billing_invoice_export": OperatorOnly(kwargs={"invoice_id": "b_invoice_id"}),
    # operator load: tenants ranked by their use of the shared capacity (portal/operator/load_views.py)
    "operator:load": OperatorOnly(),
    "operator:load_queues": OperatorOnly(),
    # each staff member's own operator API tokens (portal/operator/token_views.py); an operator's
    # token aimed at tenant routes: test_an_operator_token_opens_no_tenant_api_route below
    "operator:api_tokens": OperatorOnly(),
    "operator:api_token_create": OperatorOnly(methods=("POST",)),
    "operator:api_token_revoke": OperatorOnly(methods=("POST",), kwargs={"token_id": "operator_token_id"}),
    # the same for operators over the API (staff only, by session or operator token; tenant tokens
    # and non-staff get 404)
    "api:operator-billing-tenant-list": OperatorOnly(),
    "api:operator-invoice-list": OperatorOnly(),
    "api:operator-invoice-detail": OperatorOnly(kwargs={"pk": "b_invoice_id"}),
    # the shared catalogue for operators over the API (agents/registry/operator_api.py,
    # agents/skills/operator_api.py): staff sessions only, the rest get 404 and change nothing
    "api:operator-registry-agent-list": OperatorOnly(methods=("GET", "POST")),
    "api:operator-registry-agent-detail": OperatorOnly(kwargs={"pk": "shared_agent_id"}),
    "api:operator-registry-agent-versions": OperatorOnly(methods=("GET", "POST"), kwargs={"pk": "shared_agent_id"}),
    "api:operator-registry-version-list": OperatorOnly(),
    "api:operator-registry-version-detail": OperatorOnly(kwargs={"pk": "shared_version_id"}),
    "api:operator-registry-version-submit": OperatorOnly(methods=("POST",), kwargs={"pk": "shared_version_id"}),
    "api:operator-registry-version-approve": OperatorOnly(methods=("POST",), kwargs={"pk": "shared_version_id"}),
    "api:operator-registry-version-reject": OperatorOnly(methods=("POST",), kwargs={"pk": "shared_version_id"}),
    "api:operator-registry-version-roll-back": OperatorOnly(methods=("POST",), kwargs={"pk": "shared_version_id"}),
    "api:operator-skill-list": OperatorOnly(methods=("GET", "POST")),
    "api:operator-skill-detail": OperatorOnly(methods=("GET", "PATCH"), kwargs={"pk": "shared_skill_id"}),
    "guardrails_operator:overview": OperatorOnly(),
    "guardrails_operator:tier_policy": OperatorOnly(methods=("GET", "POST"), kwargs={"slug": "tier_slug"}),
}

# Route families the project takes from libraries, matched by module and path.
# Django admin: staff only (non-staff are sent to the admin login page).
ADMIN_PREFIX = "admin/"
# django-allauth account pages: about the signed-in person, never tenant data.
ACCOUNT_MODULE_PREFIX = "allauth."
# allauth.socialaccount's deprecated accounts/social/… paths: plain redirects to its pages.
ALLAUTH_LEGACY_REDIRECT_PREFIX = "accounts/social/"


def classify(route: Route):
    if route.path.startswith(ADMIN_PREFIX):
        return "admin"
    if route.module.startswith(ACCOUNT_MODULE_PREFIX):
        return NoTenantData()
    if route.path.startswith(ALLAUTH_LEGACY_REDIRECT_PREFIX) and route.name is None:
        return NoTenantData()
    if route.name in ROUTES:
        return ROUTES[route.name]
    return None


def test_every_route_is_known_to_this_test():
    unknown = [f"{r.path} (name={r.name}, view module={r.module})" for r in all_routes() if classify(r) is None]
    assert unknown == [], (
        "These routes are not covered by the isolation test; add each to ROUTES in "
        f"{__file__} with how it must be exercised:\n" + "\n".join(unknown)
    )


def test_every_listed_route_still_exists():
    names = {r.name for r in all_routes()}
    assert set(ROUTES) - names == set()


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture
def scene(world, client):
    """A's owner signed in; B has a member and a pending invitation to aim at."""
    b = world.b
    invitation_b = factories.make_invitation(b.tenant, "secret-bravo-invitee@bravo.test", invited_by=b.owner)
    with tenant_context(b.tenant):
        AuditLog(action="bravo.private_action", actor=b.owner, target_repr="Bravo Inc secret").save()
    invitation_a = factories.make_invitation(world.a.tenant, "invitee@alpha.test", invited_by=world.a.owner)
    client_a, agent_a = _machine_identities(world.a, "Alpha")
    client_b, agent_b = _machine_identities(b, "Bravo Inc")
    catalogue = make_catalogue(world.a.tenant, b.tenant)
    _, message_b, turn_b = make_turn(b.tenant, b.owner, catalogue.helpdesk, "Bravo Inc secret plan?", status="failed")
    _, message_a, turn_a = make_turn(world.a.tenant, world.a.owner, catalogue.helpdesk, "Alpha question?")
    event_a, event_b = _guardrail_event(world.a, turn_a, "Alpha"), _guardrail_event(b, turn_b, "Bravo Inc")
    kb_a, document_a, chunk_a = make_knowledge_rows(world.a, "Alpha")
    kb_b, document_b, chunk_b = make_knowledge_rows(b, "Bravo Inc")
    invoice_a, invoice_b = _usage_and_invoice(world.a), _usage_and_invoice(b)
    tool = _tool(world)
    own_agent_a, own_agent_b = _own_agent(world.a, "Alpha", agent_a, tool), _own_agent(b, "Bravo Inc", agent_b, tool)
    memory_a, memory_b = _memory(world.a, catalogue, "Alpha"), _memory(b, catalogue, "Bravo Inc")
    version_a, version_b = _agent_version(world.a, own_agent_a, "Alpha"), _agent_version(b, own_agent_b, "Bravo Inc")
    shared_version = _shared_version(catalogue.helpdesk, world)
    shared_skill, skill_a, skill_b = _skills(world, own_agent_a, own_agent_b)
    operator_token, operator_token_raw = _operator_token()
    # A's plan includes the audit log export, so that A's export is a real CSV to search for B's rows.
    world.a.tenant.refresh_from_db()
    world.a.tenant.feature_grants = sorted({*world.a.tenant.feature_grants, "audit_export"})
    world.a.tenant.save(update_fields=["feature_grants"])
    client.force_login(world.a.owner)
    client.raise_request_exception = False
    return {
        "client": client,
        "world": world,
        "tenant_a_slug": world.a.tenant.slug,
        "tenant_b_slug": b.tenant.slug,
        "tier_slug": b.tenant.tier.slug,
        "b_objects": {
            "membership": b.memberships["member"].pk,
            "invitation": invitation_b.pk,
            "api_client": client_b.pk,
            "agent_identity": agent_b.pk,
            "conversation": turn_b.conversation_id,
            "message": message_b.pk,
            "invocation": turn_b.pk,
            "guardrail_event": event_b.pk,
            "knowledge_base": kb_b.pk,
            "knowledge_document": document_b.pk,
            "knowledge_chunk": chunk_b.pk,
            "invoice": invoice_b.pk,
            "agent": own_agent_b.pk,
            "memory_record": memory_b.pk,
            "agent_version": version_b.pk,
            "agent_version_number": version_b.number,
            "skill": skill_b.pk,
        },
        "a_objects": {
            "membership": world.a.memberships["member"].pk,
            "invitation": invitation_a.pk,
            "api_client": client_a.pk,
            "agent_identity": agent_a.pk,
            "conversation": turn_a.conversation_id,
            "message": message_a.pk,
            "invocation": turn_a.pk,
            "guardrail_event": event_a.pk,
            "knowledge_base": kb_a.pk,
            "knowledge_document": document_a.pk,
            "knowledge_chunk": chunk_a.pk,
            "invoice": invoice_a.pk,
            "agent": own_agent_a.pk,
            "memory_record": memory_a.pk,
            "agent_version": version_a.pk,
            "agent_version_number": version_a.number,
            "skill": skill_a.pk,
        },
        "agent_b_id": agent_b.pk,
        "shared_agent_id": catalogue.helpdesk.pk,
        "shared_version_number": shared_version.number,
        "shared_version_id": shared_version.pk,
        "tool_key": tool.key,
        "skill_key": shared_skill.key,
        "shared_skill_id": shared_skill.pk,
        "b_api_client_id": client_b.pk,
        "operator_token_id": operator_token.pk,
        "operator_token": operator_token_raw,
        "b_invitation_id": invitation_b.pk,
        "b_invoice_id": invoice_b.pk,
        "invitation_b": invitation_b,
    }


def _operator_token():
    """An operator's API token with every operator scope."""
    from tenants.identity import operator_tokens

    operator = factories.make_user("token-operator@portal.test", is_staff=True)
    return operator_tokens.create(operator, name="Automation", scopes=operator_tokens.SCOPES)


def _usage_and_invoice(side):
    """A metered turn this month (by the tenant's owner) and the month's draft invoice."""
    from django.utils import timezone

    from billing import invoices as billing_invoices
    from billing.accounting import month_start
    from tests.billing.usage_helpers import record_usage

    record_usage(side.tenant, timezone.now(), user=side.owner, input_tokens=4321, output_tokens=10)
    return billing_invoices.draft_invoice(side.tenant, month_start())


def _tool(world):
    """A registry tool both tenants' tier allows."""
    from tests.tools.helpers import make_tools

    return make_tools(world.a.tenant.tier)["calculator"]


def _own_agent(side, label: str, identity, tool):
    """An agent of the tenant's own (seen by it only), with `tool` enabled for it there."""
    from agents.models import Agent, AgentStatus
    from agents.tools.models import AgentTool

    with tenant_context(side.tenant):
        agent = Agent.objects.create(
            owner_tenant=side.tenant,
            slug=f"{side.tenant.slug}-private",
            name=f"{label} private agent",
            status=AgentStatus.PUBLISHED,
            identity=identity,
        )
        AgentTool.objects.create(agent=agent, tool=tool)
    return agent


def _agent_version(side, agent, label: str):
    """A version of the tenant's own agent waiting for review (its instructions name the tenant)."""
    from agents.registry.models import AgentVersion

    with tenant_context(side.tenant):
        return AgentVersion.objects.create(
            agent=agent,
            owner_tenant=side.tenant,
            number=1,
            name=agent.name,
            instructions=f"{label} secret instructions",
            author=side.admin,
            author_email=side.admin.email,
            state="submitted",
        )


def _shared_version(agent, world):
    """A submitted version of a shared agent (the operators'), for the operator routes."""
    from agents.registry.models import AgentVersion
    from tenants.context import all_tenants

    with all_tenants("test: the shared catalogue"):
        return AgentVersion.unscoped.create(
            agent=agent, number=1, name=agent.name, instructions="Shared instructions", state="submitted"
        )


def _skills(world, own_agent_a, own_agent_b):
    """A shared skill of both tenants' tier, and each tenant's own skill bridged onto it
    (named after the tenant), followed by the tenant's own agent."""
    from tests.skills.helpers import attach, own_skill, shared_skill

    shared = shared_skill(world.a.tenant.tier)
    skill_a, skill_b = own_skill(world.a, extends=shared), own_skill(world.b, extends=shared)
    attach(world.a, own_agent_a, skill_a)
    attach(world.b, own_agent_b, skill_b)
    return shared, skill_a, skill_b


def _memory(side, catalogue, label: str):
    """A fact the tenant's member asked the helpdesk to remember (its text names the tenant)."""
    from agents.memory.models import MemoryRecord

    with tenant_context(side.tenant):
        return MemoryRecord.objects.create(
            namespace=f"/tenant/{side.tenant.pk}/user/{side.member.pk}/agent/helpdesk",
            user=side.member,
            agent=catalogue.helpdesk,
            content=f"{label} member fact: the vault code is 1234.",
        )


def _machine_identities(side, label: str):
    """An API client and an agent identity of the tenant's own (allowed to act there)."""
    with tenant_context(side.tenant):
        client = ApiClient.objects.create(
            name=f"{label} robot", client_id=f"tpc_{side.tenant.pk}_robot", secret_hash="0" * 64, scopes=["tenant:read"]
        )
        agent = AgentIdentity.objects.create(
            name=f"{label} agent", client_id=f"agt_{side.tenant.slug}", secret_hash="0" * 64, owner_tenant=side.tenant
        )
        AgentGrant.objects.create(agent=agent)
    return client, agent


def _guardrail_event(side, turn, label: str):
    """A trigger in the tenant's own turn, and a guardrail override to aim writes at."""
    with tenant_context(side.tenant):
        TenantGuardrailOverride.objects.create(config={"blocked_terms": [f"{label} codeword"]})
        return GuardrailEvent.objects.create(
            invocation=turn, stage="input", category="pii", rule="email", action="redact", excerpt=f"{label} [EMAIL]"
        )


def _request(client, method: str, url: str, api: bool):
    if method == "GET":
        return client.get(url)
    body = {"role": "admin", "email": "someone@alpha.test", "reason": "test"}
    if api:
        import json

        return client.generic(method, url, data=json.dumps(body), content_type="application/json")
    return client.generic(
        method,
        url,
        data="role=admin&email=someone%40alpha.test&reason=test",
        content_type="application/x-www-form-urlencoded",
    )


def _assert_no_foreign_data(response):
    if response.streaming and response["Content-Type"] == "text/event-stream":
        # The Server-Sent Events of the caller's own turn: reading the stream needs a second
        # database connection, which a test inside one transaction cannot have; the streams
        # are read in tests/agents/test_streaming.py, and another's turn is a plain 404 here.
        response.close()
        return
    if response.streaming:  # a download streamed in batches (the audit log's CSV)
        body = b"".join(response.streaming_content).decode(errors="replace")
    else:
        body = response.content.decode(errors="replace")
    # Addresses and codes carry line-break hints (portal_format.breakable): "owner@<wbr>bravo.<wbr>test"
    # must still count as B's "bravo.test".
    body = body.replace("<wbr>", "")
    for marker in FOREIGN_MARKERS:
        assert marker not in body, f"{marker!r} leaked into {response.request['PATH_INFO']}"


def _b_state(world):
    """Everything of B's that a successful cross-tenant write would change."""
    with tenant_context(world.b.tenant):
        return (
            sorted(Membership.objects.values_list("pk", "role")),
            sorted(Invitation.objects.values_list("pk", "status", "secret_hash")),
            AuditLog.objects.count(),
            sorted(ApiClient.objects.values_list("pk", "revoked_at")),
            sorted(AgentGrant.objects.values_list("agent_id", flat=True)),
            sorted(AgentIdentity.objects.filter(owner_tenant=world.b.tenant).values_list("pk", "secret_hash")),
            sorted(Message.objects.values_list("pk", "status", "feedback", "content")),
            sorted(Invocation.objects.values_list("pk", "status", "cancel_requested")),
            Conversation.objects.count(),
            sorted(GuardrailEvent.objects.values_list("pk", "false_positive")),
            sorted(map(str, TenantGuardrailOverride.objects.values_list("config", flat=True))),
            sorted(KnowledgeBase.objects.values_list("pk", "name", "description")),
            sorted(Document.objects.values_list("pk", "status", "version", "checksum")),
            sorted(Chunk.objects.values_list("pk", "text")),
            sorted(Invoice.objects.values_list("pk", "status", "total", "drafted_at")),
            _memory_state(),
            _registry_state(),
            _skills_state(),
        )


def _registry_state():
    from agents.models import Agent
    from agents.registry.models import AgentVersion

    return (
        sorted(AgentVersion.objects.values_list("pk", "state", "instructions")),
        sorted(Agent.objects.values_list("pk", "status", "published_version", "instructions")),
    )


def _shared_catalogue_state():
    """The operators' shared agents, their versions and shared skills."""
    from agents.models import Agent
    from agents.registry.models import AgentVersion
    from agents.skills.models import Skill
    from tenants.context import all_tenants

    with all_tenants("test: the shared catalogue"):
        return (
            sorted(AgentVersion.unscoped.filter(owner_tenant=None).values_list("pk", "state", "instructions")),
            sorted(Agent.unscoped.filter(owner_tenant=None).values_list("pk", "status", "published_version")),
            sorted(map(str, Skill.unscoped.filter(owner_tenant=None).values_list("pk", "key", "status", "tiers"))),
        )


def _skills_state():
    from agents.skills.models import AgentSkill, Skill

    return (
        sorted(Skill.objects.exclude(owner_tenant=None).values_list("pk", "key", "name", "instructions", "status")),
        sorted(AgentSkill.objects.values_list("agent_id", "skill_id")),
    )


def _memory_state():
    from agents.memory.models import MemoryRecord

    return sorted(MemoryRecord.objects.values_list("pk", "namespace", "content"))


def _kwargs_for(route: Route, names: dict[str, str], scene) -> dict[str, str]:
    kwargs = {}
    for kwarg in re.findall(r"<(?:\w+:)?(\w+)>|\(\?P<(\w+)>", route.path):
        key = kwarg[0] or kwarg[1]
        kwargs[key] = scene[names[key]] if key in names else "x"
    return kwargs


def _routes_of(kind):
    return [pytest.param(r, id=r.name) for r in all_routes() if isinstance(classify(r), kind)]


# --- the proofs -------------------------------------------------------------------------


@pytest.mark.parametrize("route", _routes_of(TenantScoped))
def test_tenant_routes_answer_404_for_another_tenants_slug(route, scene):
    spec: TenantScoped = classify(route)
    world = scene["world"]
    before = _b_state(world)
    for method in spec.methods:
        kwargs = {"tenant_slug": scene["tenant_b_slug"]}
        kwargs.update({k: scene["b_objects"][v] for k, v in spec.objects.items()})
        response = _request(scene["client"], method, reverse(route.name, kwargs=kwargs), spec.api)
        assert response.status_code == 404, f"{method} {route.name} as a non-member gave {response.status_code}"
        _assert_no_foreign_data(response)
    assert _b_state(world) == before


@pytest.mark.parametrize("route", [r for r in _routes_of(TenantScoped) if classify(r.values[0]).objects])
def test_tenant_routes_answer_404_for_another_tenants_objects_under_ones_own_slug(route, scene):
    spec: TenantScoped = classify(route)
    world = scene["world"]
    before = _b_state(world)
    for method in spec.methods:
        kwargs = {"tenant_slug": scene["tenant_a_slug"]}
        kwargs.update({k: scene["b_objects"][v] for k, v in spec.objects.items()})
        response = _request(scene["client"], method, reverse(route.name, kwargs=kwargs), spec.api)
        assert response.status_code == 404, f"{method} {route.name} with B's object gave {response.status_code}"
        _assert_no_foreign_data(response)
    assert _b_state(world) == before


@pytest.mark.parametrize("route", _routes_of(TenantScoped))
def test_tenant_routes_show_none_of_another_tenants_data_to_a_member(route, scene):
    spec: TenantScoped = classify(route)
    kwargs = {"tenant_slug": scene["tenant_a_slug"]}
    kwargs.update({k: scene["a_objects"][v] for k, v in spec.objects.items()})
    response = scene["client"].get(reverse(route.name, kwargs=kwargs))
    assert response.status_code < 500
    _assert_no_foreign_data(response)


@pytest.mark.parametrize("route", _routes_of(CallerScoped))
def test_caller_scoped_routes_hide_other_tenants(route, scene):
    spec: CallerScoped = classify(route)
    kwargs = {k: scene[v] for k, v in spec.kwargs.items()}
    response = scene["client"].get(reverse(route.name, kwargs=kwargs))
    assert response.status_code in (200, 404)
    if kwargs:
        assert response.status_code == 404
    _assert_no_foreign_data(response)


@pytest.mark.parametrize("route", _routes_of(OperatorOnly))
def test_operator_routes_answer_404_to_tenant_users(route, scene):
    spec: OperatorOnly = classify(route)
    world = scene["world"]
    before, shared_before = _b_state(world), _shared_catalogue_state()
    kwargs = {k: scene[v] for k, v in spec.kwargs.items()}
    for method in spec.methods:
        response = _request(scene["client"], method, reverse(route.name, kwargs=kwargs), api=False)
        assert response.status_code == 404, f"{method} {route.name} gave {response.status_code} to a tenant owner"
        _assert_no_foreign_data(response)
    assert _b_state(world) == before
    assert _shared_catalogue_state() == shared_before


@pytest.mark.parametrize("route", _routes_of(NoTenantData))
def test_public_and_account_pages_carry_no_tenant_data(route, scene):
    spec: NoTenantData = classify(route)
    path = "/" + re.sub(r"\^|\$", "", route.path)
    path = re.sub(r"<(?:\w+:)?\w+>|\(\?P<\w+>[^)]*\)", "x", path)
    response = scene["client"].get(path)
    assert response.status_code < 500, f"{path} gave {response.status_code}"
    _assert_no_foreign_data(response)
    assert spec is not None


def _api_routes_outside_the_operator_api():
    return [
        pytest.param(r, id=r.name)
        for r in all_routes()
        if r.path.startswith("api/v1/")
        and r.name
        and not r.path.startswith("api/v1/operator/")
        and isinstance(classify(r), TenantScoped | CallerScoped | NoTenantData)
    ]


@pytest.mark.parametrize("route", _api_routes_outside_the_operator_api())
def test_an_operator_token_opens_no_tenant_api_route(route, scene):
    # An operator's token (every operator scope) speaks for no tenant: every tenant route and
    # every gateway answers it 401 and changes nothing.
    from django.test import Client

    spec = classify(route)
    world = scene["world"]
    before = _b_state(world)
    machine = Client(HTTP_AUTHORIZATION=f"Bearer {scene['operator_token']}")
    if isinstance(spec, NoTenantData):
        # The gateways take POST (GET is a 405 before any credential), with a body each would accept.
        body = {"query": "x", "tool": "calculator", "input": {}, "content": "x", "jsonrpc": "2.0", "id": 1}
        calls = [("POST", reverse(route.name), json.dumps({**body, "method": "tools/list"}))]
    else:
        if isinstance(spec, TenantScoped):
            kwargs = {"tenant_slug": scene["tenant_b_slug"]}
            kwargs.update({k: scene["b_objects"][v] for k, v in spec.objects.items()})
        else:
            kwargs = {k: scene[v] for k, v in spec.kwargs.items()}
        methods = spec.methods if isinstance(spec, TenantScoped) else ("GET",)
        calls = [(method, reverse(route.name, kwargs=kwargs), json.dumps({"role": "admin"})) for method in methods]
    for method, path, body in calls:
        response = machine.generic(method, path, data=body, content_type="application/json")
        assert response.status_code == 401, f"{method} {path} gave {response.status_code} to an operator token"
        _assert_no_foreign_data(response)
    assert _b_state(world) == before


def test_admin_routes_send_non_staff_to_the_login(scene):
    b_ids = scene["b_objects"]
    checked = 0
    for route in all_routes():
        if classify(route) != "admin":
            continue
        path = "/" + re.sub(r"\^|\$", "", route.path)
        path = re.sub(r"<path:object_id>|<id>|<path:content_type_id>", str(b_ids["membership"]), path)
        path = re.sub(r"\(\?P<app_label>[^)]*\)", "tenants", path)
        path = re.sub(r"\(\?P<url>\.\*\)", "tenants/membership/", path)
        response = scene["client"].get(path)
        if route.name in ("admin:login", "admin:logout"):
            # The admin's own sign-in page says "not authorised" to a signed-in non-staff user.
            assert response.status_code in (200, 302, 405)
        else:
            assert response.status_code in (302, 404), f"{path} gave {response.status_code} to a non-staff user"
        if response.status_code == 302:
            assert response["Location"].startswith("/admin/")
        _assert_no_foreign_data(response)
        checked += 1
    assert checked > 20


def test_a_forged_invitation_token_for_another_tenant_is_404(scene):
    invitation_b = scene["invitation_b"]
    forged = f"{invitation_b.tenant_id}.{'0' * 64}"
    wrong_tenant = f"{scene['world'].a.tenant.pk}.{invitation_b.secret}"
    for token in (forged, wrong_tenant, "garbage", f"{invitation_b.tenant_id}."):
        response = scene["client"].get(reverse("invitation_accept", args=[token]))
        assert response.status_code == 404
        _assert_no_foreign_data(response)

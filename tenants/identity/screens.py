"""Tenant admin screens of the identity room: API clients, agent identities, sign-in security.

Views are thin: parse → access → service → render. Secrets are shown once, on
the response to the POST that made them (never stored in the session, never
cached: `never_cache`), and cannot be retrieved again.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from tenants import entitlements
from tenants.identity import mfa, services
from tenants.identity import scopes as scope_lib
from tenants.identity.access import access_agent_identity, access_api_client, access_own_agent_identity
from tenants.identity.forms import AgentIdentityForm, ApiClientForm, MfaRequirementForm
from tenants.identity.models import ApiClient, with_owner_role
from tenants.models import Membership
from tenants.roles import Action
from tenants.services import Actor, ServiceError
from tenants.views import tenant_view


def token_endpoint_url() -> str:
    # The value the authorization-server metadata advertises (tenants/identity/views.py).
    return f"{settings.TOKEN_ISSUER}{reverse('oauth_token')}"


def _how_to_connect(request, client_id: str, scopes: list[str]) -> dict:
    """What a developer needs to get a token with client_credentials, and use it."""
    return {
        "client_id": client_id,
        "token_url": token_endpoint_url(),
        "scope_string": scope_lib.format_scope(scopes),
        "api_url": f"{settings.SITE_URL}{reverse('api:member-list', kwargs={'tenant_slug': request.tenant.slug})}",
    }


# --- API clients --------------------------------------------------------------------------


def _api_clients_context(request, form=None) -> dict:
    tenant = request.tenant
    entitled = entitlements.has_feature(tenant, "api_access")
    role = request.membership.role
    own_scopes = scope_lib.scopes_for_role(role)
    clients = list(
        with_owner_role(ApiClient.objects.select_related("created_by", "owner")).order_by("revoked_at", "-created_at")
    )
    for client in clients:
        _with_take_over(client, role)
    return {
        "clients": clients,
        "entitled": entitled,
        "form": form or ApiClientForm(allowed_scopes=own_scopes),
        "token_url": token_endpoint_url(),
    }


@tenant_view(Action.MANAGE_API_CLIENTS)
def api_clients(request):
    return render(request, "identity/api_clients.html", _api_clients_context(request))


def _api_client_secret_page(request, client: ApiClient, secret: str, *, taken_over: bool = False):
    context = {
        "kind": "API client",
        "name": client.name,
        "secret": secret,
        "rotated": taken_over,
        "taken_over": taken_over,
        "scopes": client.scopes,
        "done_url": reverse("tenants:api_client", kwargs={"tenant_slug": request.tenant.slug, "client_id": client.pk}),
        **_how_to_connect(request, client.client_id, client.scopes),
    }
    return render(request, "identity/secret.html", context)


@never_cache
@require_POST
@tenant_view(Action.MANAGE_API_CLIENTS)
def api_client_create(request):
    own_scopes = scope_lib.scopes_for_role(request.membership.role)
    form = ApiClientForm(request.POST, allowed_scopes=own_scopes)
    if form.is_valid():
        try:
            client, secret = services.create_api_client(
                Actor.from_request(request), name=form.cleaned_data["name"], scopes=form.cleaned_data["scopes"]
            )
        except ServiceError as exc:
            form.add_error(None, exc)
        else:
            return _api_client_secret_page(request, client, secret)
    return render(request, "identity/api_clients.html", _api_clients_context(request, form=form), status=400)


def _with_take_over(client: ApiClient, role: str) -> ApiClient:
    """Whether the viewer may take a paused client over, and if not why (for the page)."""
    client.take_over_refusal = services.take_over_refusal(client, role) if client.is_paused else ""
    client.may_take_over = client.is_paused and not client.take_over_refusal
    return client


@tenant_view(Action.MANAGE_API_CLIENTS)
def api_client(request, client_id):
    client = _with_take_over(access_api_client(client_id), request.membership.role)
    context = {"client": client, **_how_to_connect(request, client.client_id, client.scopes)}
    return render(request, "identity/api_client_detail.html", context)


@never_cache
@require_POST
@tenant_view(Action.MANAGE_API_CLIENTS)
def api_client_take_over(request, client_id):
    client = access_api_client(client_id)
    try:
        client, secret = services.take_over_api_client(Actor.from_request(request), client)
    except ServiceError as exc:
        messages.error(request, exc.text)
        # Back where the button was: the client's own page or the list.
        if request.POST.get("from") == "client":
            return redirect("tenants:api_client", tenant_slug=request.tenant.slug, client_id=client.pk)
        return redirect("tenants:api_clients", tenant_slug=request.tenant.slug)
    # The new secret, once, on the response to the POST that made it (as at creation).
    return _api_client_secret_page(request, client, secret, taken_over=True)


@require_POST
@tenant_view(Action.MANAGE_API_CLIENTS)
def api_client_revoke(request, client_id):
    client = access_api_client(client_id)
    try:
        services.revoke_api_client(Actor.from_request(request), client)
    except ServiceError as exc:
        messages.error(request, exc.text)
    else:
        messages.success(request, f"{client.name} is revoked. Its tokens stop working at once.")
    return redirect("tenants:api_clients", tenant_slug=request.tenant.slug)


# --- agent identities -----------------------------------------------------------------------


def _agents_context(request, form=None) -> dict:
    own_scopes = scope_lib.scopes_for_role(request.membership.role)
    rows = [
        {"agent": agent, "allowed": allowed, "own": agent.owner_tenant_id == request.tenant.pk}
        for agent, allowed in services.visible_agents_for_tenant()
    ]
    return {
        "rows": rows,
        "form": form or AgentIdentityForm(allowed_scopes=own_scopes),
        "exchanged_minutes": max(1, settings.EXCHANGED_TOKEN_LIFETIME_SECONDS // 60),
        "token_url": token_endpoint_url(),
    }


@tenant_view(Action.MANAGE_AGENTS)
def agents(request):
    return render(request, "identity/agents.html", _agents_context(request))


def _agent_secret_page(request, agent, secret: str, *, rotated: bool):
    context = {
        "kind": "agent",
        "name": agent.name,
        "secret": secret,
        "rotated": rotated,
        "scopes": agent.allowed_scopes,
        "client_id": agent.client_id,
        "token_url": token_endpoint_url(),
        "is_agent": True,
        "done_url": reverse("tenants:agents", kwargs={"tenant_slug": request.tenant.slug}),
    }
    return render(request, "identity/secret.html", context)


@never_cache
@require_POST
@tenant_view(Action.MANAGE_AGENTS)
def agent_create(request):
    # An agent acts for users, never with more than they have; offering the
    # admin's own scopes only keeps the two screens' rules the same.
    own_scopes = scope_lib.scopes_for_role(request.membership.role)
    form = AgentIdentityForm(request.POST, allowed_scopes=own_scopes)
    if form.is_valid():
        try:
            agent, secret = services.create_tenant_agent_identity(
                Actor.from_request(request),
                name=form.cleaned_data["name"],
                allowed_scopes=form.cleaned_data["allowed_scopes"],
            )
        except ServiceError as exc:
            form.add_error(None, exc)
        else:
            return _agent_secret_page(request, agent, secret, rotated=False)
    return render(request, "identity/agents.html", _agents_context(request, form=form), status=400)


@require_POST
@tenant_view(Action.MANAGE_AGENTS)
def agent_allow(request, agent_id):
    agent = access_agent_identity(agent_id)
    try:
        services.allow_agent(Actor.from_request(request), agent)
    except ServiceError as exc:
        messages.error(request, exc.text)
    else:
        messages.success(request, f"{agent.name} may now act for your users.")
    return redirect("tenants:agents", tenant_slug=request.tenant.slug)


@require_POST
@tenant_view(Action.MANAGE_AGENTS)
def agent_disallow(request, agent_id):
    agent = access_agent_identity(agent_id)
    try:
        services.disallow_agent(Actor.from_request(request), agent)
    except ServiceError as exc:
        messages.error(request, exc.text)
    else:
        messages.success(request, f"{agent.name} may no longer act for your users.")
    return redirect("tenants:agents", tenant_slug=request.tenant.slug)


@never_cache
@require_POST
@tenant_view(Action.MANAGE_AGENTS)
def agent_rotate(request, agent_id):
    agent = access_own_agent_identity(agent_id)
    actor = Actor.from_request(request)
    try:
        secret = services.rotate_agent_secret(request.user, agent, actor=actor, ip=actor.ip)
    except ServiceError as exc:
        messages.error(request, exc.text)
        return redirect("tenants:agents", tenant_slug=request.tenant.slug)
    return _agent_secret_page(request, agent, secret, rotated=True)


# --- sign-in security -------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
@tenant_view(Action.MANAGE_SECURITY)
def security(request):
    if request.method == "POST":
        form = MfaRequirementForm(request.POST)
        if form.is_valid():
            required = form.cleaned_data["require_mfa"]
            try:
                services.set_mfa_requirement(Actor.from_request(request), required=required)
            except ServiceError as exc:
                messages.error(request, exc.text)
            else:
                if required:
                    messages.success(request, "Members now need two-factor authentication to use this organisation.")
                else:
                    messages.success(request, "Two-factor authentication is optional again.")
        return redirect("tenants:security", tenant_slug=request.tenant.slug)

    memberships = list(Membership.objects.select_related("user").order_by("user__email"))
    with_totp = mfa.users_with_totp(m.user_id for m in memberships)
    rows = [{"membership": m, "has_totp": m.user_id in with_totp} for m in memberships]
    context = {
        "rows": rows,
        "enabled_count": sum(1 for row in rows if row["has_totp"]),
        "i_have_totp": request.user.pk in with_totp,
    }
    return render(request, "identity/security.html", context)

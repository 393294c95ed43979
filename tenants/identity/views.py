"""Public identity endpoints: JWKS, authorization-server metadata, the token endpoint."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote

from allauth.account import views as allauth_views
from allauth.account.adapter import get_adapter as get_account_adapter
from django.conf import settings
from django.contrib import messages
from django.http import HttpResponseRedirect, JsonResponse
from django.views.decorators.cache import cache_control
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET

from tenants.identity import keys, oauth
from tenants.identity import scopes as scope_lib


@require_GET
@cache_control(public=True, max_age=60)
def jwks(request):
    return JsonResponse(keys.jwks())


@require_GET
@cache_control(public=True, max_age=300)
def authorization_server_metadata(request):
    """RFC 8414 fields that apply to this server."""
    base = settings.TOKEN_ISSUER
    return JsonResponse(
        {
            "issuer": base,
            "token_endpoint": f"{base}/oauth/token",
            "jwks_uri": f"{base}/.well-known/jwks.json",
            "grant_types_supported": [oauth.GRANT_CLIENT_CREDENTIALS, oauth.GRANT_TOKEN_EXCHANGE],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "token_endpoint_auth_signing_alg_values_supported": [keys.ALGORITHM],
            "scopes_supported": sorted(scope_lib.SCOPES),
            "response_types_supported": ["token"],
            "service_documentation": f"{base}/api/docs/",
        }
    )


def _oauth_error(error: oauth.OAuthError) -> JsonResponse:
    response = JsonResponse({"error": error.error, "error_description": error.description}, status=error.status)
    if error.status == 401:
        response["WWW-Authenticate"] = 'Basic realm="token"'
    return _no_store(response)


def _no_store(response):
    response["Cache-Control"] = "no-store"
    response["Pragma"] = "no-cache"
    return response


def _client_from_request(request) -> oauth.AuthenticatedClient | None:
    """client_secret_basic (Authorization: Basic) or client_secret_post; None if absent."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if header[:6].lower() == "basic ":
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise oauth.OAuthError("invalid_client", "Client authentication failed.", status=401)
        client_id, sep, secret = decoded.partition(":")
        if not sep:
            raise oauth.OAuthError("invalid_client", "Client authentication failed.", status=401)
        # RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
        return oauth.authenticate_client(unquote(client_id), unquote(secret))
    if "client_id" in request.POST or "client_secret" in request.POST:
        return oauth.authenticate_client(request.POST.get("client_id", ""), request.POST.get("client_secret", ""))
    return None


@csrf_exempt
def token(request):
    """POST /oauth/token — application/x-www-form-urlencoded, RFC 6749 errors."""
    try:
        if request.method != "POST":
            raise oauth.OAuthError("invalid_request", "Use POST.", status=405)
        content_type = request.content_type or ""
        if content_type != "application/x-www-form-urlencoded":
            raise oauth.OAuthError("invalid_request", "The body must be application/x-www-form-urlencoded.")
        for name, values in request.POST.lists():
            if name not in ("audience", "resource") and len(values) > 1:
                raise oauth.OAuthError("invalid_request", f"Parameter {name} appears more than once.")
        grant_type = request.POST.get("grant_type", "")
        client = _client_from_request(request)
        if grant_type == oauth.GRANT_CLIENT_CREDENTIALS:
            if client is None:
                raise oauth.OAuthError("invalid_client", "Client authentication failed.", status=401)
            body = oauth.client_credentials(client, request.POST.get("scope"))
        elif grant_type == oauth.GRANT_TOKEN_EXCHANGE:
            body = oauth.token_exchange(
                client=client,
                subject_token=request.POST.get("subject_token", ""),
                subject_token_type=request.POST.get("subject_token_type", ""),
                actor_token=request.POST.get("actor_token") or None,
                actor_token_type=request.POST.get("actor_token_type") or None,
                audiences=request.POST.getlist("audience"),
                resources=request.POST.getlist("resource"),
                scope=request.POST.get("scope"),
                requested_token_type=request.POST.get("requested_token_type") or None,
            )
        elif not grant_type:
            raise oauth.OAuthError("invalid_request", "grant_type is required.")
        else:
            raise oauth.OAuthError("unsupported_grant_type", "Supported: client_credentials, token-exchange.")
    except oauth.OAuthError as error:
        return _oauth_error(error)
    return _no_store(JsonResponse(body))


class EmailView(allauth_views.EmailView):
    """allauth's email page, except that only a confirmed address can become the account's own.

    allauth lets an account with no confirmed address make any address primary
    (ACCOUNT_EMAIL_VERIFICATION is "none" here), which would give it an address it
    never proved: the one invitations and single sign-on are matched against.
    An added address takes over once the link mailed to it is followed.
    """

    def _action_primary(self, request, *args, **kwargs):
        address = self._get_email_address(request)
        if address is not None and not address.verified:
            get_account_adapter(request).add_message(
                request, messages.ERROR, "account/messages/unverified_primary_email.txt"
            )
            return HttpResponseRedirect(self.get_success_url())
        return super()._action_primary(request, *args, **kwargs)

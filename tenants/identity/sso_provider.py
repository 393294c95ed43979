"""allauth's OpenID Connect provider, made strict for tenant SSO.

Registered for provider "openid_connect" through SOCIALACCOUNT_PROVIDERS
["openid_connect"]["provider_class"]. For a tenant's app (settings
"tenant_sso") it:

* sends a `nonce` with every authorization request (kept in allauth's state,
  next to the PKCE verifier) and refuses an ID token that does not carry it;
* verifies the ID token's signature against the IdP's JWKS with an asymmetric
  algorithm the IdP announces — allauth 65 skips the signature when the token
  came from the token endpoint, and sends no nonce;
* checks that the discovery document names the configured issuer, that an
  https issuer names only https endpoints, and that userinfo describes the same
  subject as the ID token (every request to the IdP goes through
  tenants.identity.sso_http, which reaches public addresses only);
* ignores authorization parameters and scopes from the request's query string;
* hands the client secret (stored encrypted in SSOConnection) to the token call;
* uses our callback URL (tenants.identity.sso_views.callback), whose view gives
  this adapter the state so the nonce can be checked.

Apps without "tenant_sso" behave exactly as allauth's.
"""

from __future__ import annotations

import hmac
import secrets

import jwt
from allauth.socialaccount.helpers import render_authentication_error
from allauth.socialaccount.providers.base import AuthProcess
from allauth.socialaccount.providers.oauth2.client import OAuth2Error
from allauth.socialaccount.providers.oauth2.views import OAuth2CallbackView
from allauth.socialaccount.providers.openid_connect.provider import OpenIDConnectProvider
from allauth.socialaccount.providers.openid_connect.views import OpenIDConnectOAuth2Adapter
from allauth.utils import build_absolute_uri
from requests import RequestException

from tenants.identity import sso

# Asymmetric only: "none" and the HMAC family (keyed with the client secret) are refused.
ID_TOKEN_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
ID_TOKEN_LEEWAY_SECONDS = 60
# The request may not add or override these; the login view would otherwise take
# them from ?auth_params=… in the query string.
RESERVED_AUTH_PARAMS = frozenset(
    {"client_id", "redirect_uri", "response_type", "scope", "state", "nonce", "code_challenge", "code_challenge_method"}
)
REQUIRED_DISCOVERY_KEYS = ("issuer", "authorization_endpoint", "token_endpoint", "jwks_uri")


def is_tenant_app(app) -> bool:
    return bool(app is not None and (app.settings or {}).get("tenant_sso") is True)


class TenantOIDCAdapter(OpenIDConnectOAuth2Adapter):
    """The OAuth2 side of a tenant's IdP: discovery, token call, ID token checks."""

    def __init__(self, request, provider_id) -> None:
        super().__init__(request, provider_id)
        # The unstashed allauth state (PKCE verifier, nonce), set by TenantSSOCallbackView.
        self.state: dict | None = None

    @property
    def openid_config(self):
        try:
            config = super().openid_config
        except (AttributeError, TypeError, ValueError) as exc:  # JSON that is not an object
            raise OAuth2Error(f"The identity provider's discovery document is unusable: {exc}")
        if not getattr(self, "_openid_config_checked", False):
            if not isinstance(config, dict) or any(not isinstance(config.get(k), str) for k in REQUIRED_DISCOVERY_KEYS):
                del self._openid_config
                raise OAuth2Error("The identity provider's discovery document is incomplete.")
            expected = self.get_provider().app.settings["server_url"].rstrip("/")
            if config["issuer"].rstrip("/") != expected:
                del self._openid_config
                raise OAuth2Error(f"The discovery document names issuer {config['issuer']!r}, not {expected!r}.")
            if expected.startswith("https://"):
                # An https issuer's endpoints are https too: nothing it names is fetched in the clear.
                for key in ("authorization_endpoint", "token_endpoint", "jwks_uri", "userinfo_endpoint"):
                    value = config.get(key)
                    if value is not None and not (isinstance(value, str) and value.startswith("https://")):
                        del self._openid_config
                        raise OAuth2Error(f"The discovery document's {key} is not an https URL.")
            self._openid_config_checked = True
        return config

    def get_callback_url(self, request, app):
        return build_absolute_uri(request, sso.callback_path(self.provider_id), self.redirect_uri_protocol)

    def get_client(self, request, app):
        client = super().get_client(request, app)
        connection = sso.connection_for_provider_id(self.provider_id)
        client.consumer_secret = sso.client_secret(connection) if connection is not None else ""
        return client

    def complete_login(self, request, app, token, **kwargs):
        raw = (kwargs.get("response") or {}).get("id_token")
        if not isinstance(raw, str) or not raw:
            raise OAuth2Error("The identity provider sent no ID token.")
        claims = self.verify_id_token(app, raw, nonce=(self.state or {}).get("nonce"))
        data = {"id_token": claims}
        if app.settings.get("fetch_userinfo", True) and self.openid_config.get("userinfo_endpoint"):
            userinfo = self._fetch_user_info(token.token)
            if not isinstance(userinfo, dict) or userinfo.get("sub") != claims["sub"]:
                raise OAuth2Error("The userinfo answer describes someone other than the ID token.")
            data["userinfo"] = userinfo
        login = self.get_provider().sociallogin_from_response(request, data)
        connection = sso.connection_for_provider_id(self.provider_id)
        if connection is None or not sso.same_issuer(claims["iss"], connection.issuer):
            raise OAuth2Error("The single sign-on settings changed during this sign-in.")
        sso.stamp_link_issuer(connection, subject=claims["sub"], extra_data=login.account.extra_data)
        # Read by SocialAccountAdapter.pre_social_login: a tenant sign-in that did not
        # come through these checks (e.g. allauth's own callback URL) is refused.
        login.tenant_sso_verified = True
        return login

    def verify_id_token(self, app, raw: str, *, nonce: str | None) -> dict:
        config = self.openid_config
        try:
            header = jwt.get_unverified_header(raw)
        except jwt.PyJWTError as exc:
            raise OAuth2Error(f"The ID token is malformed: {exc}")
        algorithm = header.get("alg")
        announced = config.get("id_token_signing_alg_values_supported") or ["RS256"]
        if algorithm not in ID_TOKEN_ALGORITHMS or algorithm not in announced:
            raise OAuth2Error(f"ID tokens signed with {algorithm!r} are not accepted.")
        key = self._signing_key(header.get("kid"), algorithm)
        try:
            claims = jwt.decode(
                raw,
                key=key,
                algorithms=[algorithm],
                audience=app.client_id,
                issuer=config["issuer"],
                leeway=ID_TOKEN_LEEWAY_SECONDS,
                options={"require": ["iss", "sub", "aud", "exp", "iat"]},
            )
        except jwt.PyJWTError as exc:
            raise OAuth2Error(f"The ID token is not valid: {exc}")
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if (len(audiences) > 1 or "azp" in claims) and claims.get("azp") != app.client_id:
            raise OAuth2Error("The ID token was issued to another client (azp).")
        if not nonce or not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
            raise OAuth2Error("The ID token does not answer this sign-in (nonce).")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise OAuth2Error("The ID token names no subject.")
        return claims

    def _signing_key(self, kid, algorithm: str):
        from allauth.socialaccount.adapter import get_adapter

        with get_adapter().get_requests_session() as session:
            response = session.get(self.openid_config["jwks_uri"])
            response.raise_for_status()
            keys = response.json().get("keys")
        if not isinstance(keys, list):
            raise OAuth2Error("The identity provider's JWKS has no keys.")
        usable = [k for k in keys if isinstance(k, dict) and k.get("use", "sig") == "sig"]
        candidates = [k for k in usable if k.get("kid") == kid] if kid else usable
        if len(candidates) != 1:
            raise OAuth2Error(f"No single signing key with kid {kid!r} in the identity provider's JWKS.")
        try:
            return jwt.PyJWK(candidates[0], algorithm=algorithm).key
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise OAuth2Error(f"The identity provider's signing key cannot be used: {exc}")


class TenantOpenIDConnectProvider(OpenIDConnectProvider):
    # allauth finds the provider's URL patterns (login, callback) through its package.
    package = "allauth.socialaccount.providers.openid_connect"

    @property
    def is_tenant_sso(self) -> bool:
        return is_tenant_app(self.app)

    def get_oauth2_adapter(self, request):
        if self.is_tenant_sso:
            return TenantOIDCAdapter(request, self.app.provider_id)
        return super().get_oauth2_adapter(request)

    def get_callback_url(self):
        if self.is_tenant_sso:
            return sso.callback_path(self.app.provider_id)
        return super().get_callback_url()

    def get_auth_params_from_request(self, request, action):
        if self.is_tenant_sso:
            return self.get_auth_params()
        return super().get_auth_params_from_request(request, action)

    def get_scope_from_request(self, request):
        if self.is_tenant_sso:
            return self.get_scope()
        return super().get_scope_from_request(request)

    def redirect(self, request, process, next_url=None, data=None, **kwargs):
        if not self.is_tenant_sso:
            return super().redirect(request, process, next_url, data, **kwargs)
        connection = sso.connection_for_provider_id(self.app.provider_id)
        if connection is None or not sso.is_usable(connection):
            return render_authentication_error(request, self, exception=OAuth2Error("Single sign-on is switched off."))
        nonce = secrets.token_urlsafe(32)
        auth_params = kwargs.pop("auth_params", None) or self.get_auth_params()
        auth_params = {k: v for k, v in auth_params.items() if k not in RESERVED_AUTH_PARAMS}
        auth_params["nonce"] = nonce
        try:
            # Only ever "login": connecting an IdP identity to whoever is signed in
            # would let it sign in as them later.
            return super().redirect(
                request, AuthProcess.LOGIN, next_url, data, auth_params=auth_params, nonce=nonce, **kwargs
            )
        except (OAuth2Error, RequestException) as exc:
            # Discovery failed before allauth's own error handling (IdP down, bad JSON…).
            return render_authentication_error(request, self, exception=exc)


class TenantSSOCallbackView(OAuth2CallbackView):
    """allauth's callback, handing the state to the adapter and failing gracefully."""

    def _get_state(self, request, provider):
        state, response = super()._get_state(request, provider)
        self.adapter.state = state
        return state, response

    def dispatch(self, request, *args, **kwargs):
        try:
            return super().dispatch(request, *args, **kwargs)
        except (OAuth2Error, RequestException) as exc:
            # allauth fetches discovery for the client outside its own try block.
            return render_authentication_error(request, self.adapter.get_provider(), exception=exc)

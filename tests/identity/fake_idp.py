"""A small OpenID provider the SSO tests run on loopback (never a real IdP).

It speaks just enough OpenID Connect for the authorization code flow with PKCE:
discovery, an authorization endpoint that "signs in" `idp.user` without asking
and redirects back with a code, a token endpoint that checks client
authentication, the redirect URI and the PKCE verifier before it answers with
an ES256-signed ID token, a JWKS endpoint and a userinfo endpoint. Everything it
receives is recorded, and attributes let a test make it misbehave.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

CLIENT_ID = "portal-at-acme"
CLIENT_SECRET = "idp-issued-secret-9f8e7d"


def _public_jwk(key, kid: str) -> dict:
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    jwk.update({"kid": kid, "use": "sig", "alg": "ES256"})
    return jwk


def s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


class FakeIdP:
    def __init__(self, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET):
        self.client_id = client_id
        self.client_secret = client_secret
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.kid = "fake-idp-key-1"
        # The person who is "signed in at the IdP" when the browser arrives.
        self.user = {"sub": "idp-user-1", "email": "newcomer@alpha.test", "email_verified": True, "name": "New Comer"}
        # Ways to misbehave, set by a test.
        self.id_token_overrides: dict = {}
        self.userinfo_overrides: dict = {}
        self.sign_with_foreign_key = False
        self.discovery_overrides: dict = {}
        # A careless IdP: no client authentication, any redirect URI.
        self.lax = False
        # What it saw.
        self.authorize_requests: list[dict] = []
        self.token_requests: list[dict] = []
        self.token_errors: list[str] = []
        self.issued_id_tokens: list[str] = []
        self._codes: dict[str, dict] = {}
        self._access_tokens: dict[str, dict] = {}
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # --- lifecycle ---------------------------------------------------------------------

    @property
    def issuer(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeIdP:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- the browser's part ---------------------------------------------------------------

    def visit(self, authorize_url: str) -> str:
        """What the browser does at the IdP: GET the authorization URL, return where it redirects."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
        try:
            opener.open(authorize_url, timeout=5)
        except urllib.error.HTTPError as exc:
            if exc.code == 302:
                return exc.headers["Location"]
            raise
        raise AssertionError("The IdP did not redirect back")

    # --- documents ----------------------------------------------------------------------

    def discovery(self) -> dict:
        base = self.issuer
        return {
            "issuer": base,
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "jwks_uri": f"{base}/jwks",
            "userinfo_endpoint": f"{base}/userinfo",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": ["openid", "email", "profile"],
            **self.discovery_overrides,
        }

    def jwks(self) -> dict:
        return {"keys": [_public_jwk(self.key, self.kid)]}

    def id_token(self, grant: dict) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.client_id,
            "sub": grant["user"]["sub"],
            "email": grant["user"]["email"],
            "email_verified": grant["user"]["email_verified"],
            "name": grant["user"].get("name", ""),
            "nonce": grant["nonce"],
            "iat": now,
            "exp": now + 300,
            **self.id_token_overrides,
        }
        claims = {k: v for k, v in claims.items() if v is not None}
        key = ec.generate_private_key(ec.SECP256R1()) if self.sign_with_foreign_key else self.key
        token = jwt.encode(claims, key, algorithm="ES256", headers={"kid": self.kid})
        self.issued_id_tokens.append(token)
        return token

    # --- endpoints ------------------------------------------------------------------------

    def authorize(self, query: dict) -> tuple[int, dict, bytes]:
        self.authorize_requests.append(query)
        if query.get("client_id") != self.client_id or query.get("response_type") != "code":
            return 400, {"Content-Type": "text/plain"}, b"unknown client or response type"
        code = secrets.token_urlsafe(16)
        self._codes[code] = {
            "redirect_uri": query.get("redirect_uri"),
            "code_challenge": query.get("code_challenge"),
            "code_challenge_method": query.get("code_challenge_method"),
            "nonce": query.get("nonce"),
            "user": dict(self.user),
        }
        location = f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query.get('state', '')})}"
        return 302, {"Location": location}, b""

    def token(self, form: dict, authorization: str | None) -> tuple[int, dict]:
        self.token_requests.append({**form, "_authorization": authorization})
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.startswith("Basic "):
            client_id, _, client_secret = base64.b64decode(authorization[6:]).decode().partition(":")
        if not self.lax and (client_id != self.client_id or client_secret != self.client_secret):
            return self._token_error(401, "invalid_client")
        if form.get("grant_type") != "authorization_code":
            return self._token_error(400, "unsupported_grant_type")
        grant = self._codes.pop(form.get("code", ""), None)  # single use
        if grant is None:
            return self._token_error(400, "invalid_grant")
        if not self.lax and form.get("redirect_uri") != grant["redirect_uri"]:
            return self._token_error(400, "invalid_grant: redirect_uri differs")
        if grant["code_challenge"]:
            verifier = form.get("code_verifier", "")
            if grant["code_challenge_method"] != "S256" or s256(verifier) != grant["code_challenge"]:
                return self._token_error(400, "invalid_grant: PKCE verification failed")
        access_token = secrets.token_urlsafe(24)
        self._access_tokens[access_token] = grant["user"]
        return 200, {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": self.id_token(grant),
        }

    def _token_error(self, status: int, error: str) -> tuple[int, dict]:
        self.token_errors.append(error)
        return status, {"error": error.split(":")[0], "error_description": error}

    def userinfo(self, authorization: str | None) -> tuple[int, dict]:
        token = (authorization or "").removeprefix("Bearer ")
        user = self._access_tokens.get(token)
        if user is None:
            return 401, {"error": "invalid_token"}
        return 200, {**user, **self.userinfo_overrides}

    def _handler(self):
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                parts = urlsplit(self.path)
                if parts.path == "/.well-known/openid-configuration":
                    return self._json(200, idp.discovery())
                if parts.path == "/jwks":
                    return self._json(200, idp.jwks())
                if parts.path == "/userinfo":
                    return self._json(*idp.userinfo(self.headers.get("Authorization")))
                if parts.path == "/authorize":
                    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                    status, headers, body = idp.authorize(query)
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return None
                return self._json(404, {"error": "not_found"})

            def do_POST(self):
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                if parts.path == "/token":
                    return self._json(*idp.token(form, self.headers.get("Authorization")))
                return self._json(404, {"error": "not_found"})

        return Handler


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None

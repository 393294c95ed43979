"""Requests to a tenant's identity provider reach public addresses only (tenants/identity/sso_http.py).

Everything here runs on loopback. 127.0.0.1 plays the public internet where a test
says so (`loopback_one_is_public`); 127.0.0.2 is always the internal network.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from allauth.socialaccount.providers.oauth2.client import OAuth2Error

from tenants.context import tenant_context
from tenants.identity import sso, sso_http
from tenants.identity.sso_provider import TenantOIDCAdapter
from tests.identity.sso_helpers import grant_sso_feature, sign_in_via_sso, signed_in_user
from tests.tenants.helpers import actor


class Server:
    """A tiny HTTP server that records the paths it is asked for; `redirect_to` makes it redirect."""

    def __init__(self, host: str):
        self.hits: list[str] = []
        self.redirect_to: str | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.hits.append(self.path)
                if server.redirect_to:
                    self.send_response(302)
                    self.send_header("Location", server.redirect_to)
                    self.end_headers()
                    return
                body = json.dumps({"keys": []}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET  # the token call

        self._httpd = ThreadingHTTPServer((host, 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def internal():
    server = Server("127.0.0.2")
    yield server
    server.stop()


@pytest.fixture
def public():
    server = Server("127.0.0.1")
    yield server
    server.stop()


@pytest.fixture
def production(settings):
    settings.SSO_ALLOW_LOOPBACK_ISSUERS = False


@pytest.fixture
def loopback_one_is_public(monkeypatch, production):
    monkeypatch.setattr(sso_http, "is_public_address", lambda address: address == "127.0.0.1")


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("93.184.215.14", True),
        ("2606:4700:4700::1111", True),
        ("127.0.0.1", False),
        ("169.254.169.254", False),
        ("10.0.0.5", False),
        ("172.16.3.4", False),
        ("192.168.1.1", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("::1", False),
        ("fd00:ec2::254", False),
        ("fe80::1%eth0", False),
        ("::ffff:169.254.169.254", False),
        ("224.0.0.1", False),
    ],
)
def test_it_tells_public_addresses_from_internal_ones(address, public):
    assert sso_http.is_public_address(address) is public


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_it_refuses_an_internal_address(production, internal, scheme):
    # https: refused once connected, before the TLS handshake (this server speaks none).
    with pytest.raises(requests.ConnectionError, match="not a public address"):
        sso_http.session().get(f"{scheme}://127.0.0.2:{internal.port}/latest/meta-data/")

    assert internal.hits == []


def test_it_refuses_a_name_that_resolves_to_an_internal_address(production, internal, monkeypatch):
    real_getaddrinfo = socket.getaddrinfo

    def resolve(host, *args, **kwargs):  # a public-looking name whose DNS answers an internal address
        return real_getaddrinfo("127.0.0.2" if host == "idp.example.com" else host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)

    with pytest.raises(requests.ConnectionError, match="idp.example.com is at 127.0.0.2"):
        sso_http.session().get(f"http://idp.example.com:{internal.port}/jwks")

    assert internal.hits == []


def test_it_checks_every_redirect_hop(loopback_one_is_public, public, internal):
    public.redirect_to = internal.url + "/latest/meta-data/"

    with pytest.raises(requests.ConnectionError, match="not a public address"):
        sso_http.session().get(public.url + "/.well-known/openid-configuration")

    assert (public.hits, internal.hits) == (["/.well-known/openid-configuration"], [])


def test_it_reaches_a_public_address(loopback_one_is_public, public):
    assert sso_http.session(timeout=5).get(public.url + "/jwks").json() == {"keys": []}


def test_it_ignores_proxies_from_the_environment(loopback_one_is_public, public, internal, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", internal.url)
    monkeypatch.setenv("NO_PROXY", "")

    assert sso_http.session().get(public.url + "/jwks").status_code == 200
    assert internal.hits == []


def test_loopback_issuers_lift_the_check_where_configured(settings, internal):
    settings.SSO_ALLOW_LOOPBACK_ISSUERS = True

    assert sso_http.session().get(internal.url + "/jwks").status_code == 200


# --- the sign-in uses it for every request -------------------------------------------------
# (`alpha_sso` saves the loopback IdP with SSO_ALLOW_LOOPBACK_ISSUERS; these tests then turn it off.)


@pytest.mark.parametrize("endpoint", ["jwks_uri", "token_endpoint", "userinfo_endpoint"])
def test_an_endpoint_the_discovery_document_names_cannot_reach_the_internal_network(
    client, world, idp, alpha_sso, loopback_one_is_public, internal, endpoint
):
    idp.discovery_overrides = {endpoint: internal.url + "/latest/meta-data/iam/"}
    idp.user = {"sub": "x", "email": "newcomer@alpha.test", "email_verified": True}

    response = sign_in_via_sso(client, idp, "newcomer@alpha.test")

    assert response.status_code == 401
    assert internal.hits == []
    assert signed_in_user(client) is None


def test_an_issuer_on_the_internal_network_is_not_even_asked_for_its_discovery_document(
    client, world, idp, alpha_sso, production
):
    response = client.post("/accounts/sso/", {"login": "newcomer@alpha.test"})

    assert response.status_code == 401  # allauth's error page: discovery failed
    assert idp.authorize_requests == []
    assert signed_in_user(client) is None


@pytest.mark.parametrize("endpoint", ["authorization_endpoint", "token_endpoint", "jwks_uri", "userinfo_endpoint"])
def test_an_https_issuer_may_name_only_https_endpoints(rf, world, settings, endpoint):
    settings.SSO_ALLOW_LOOPBACK_ISSUERS = False
    grant_sso_feature(world.a.tenant)
    issuer = "https://login.alpha-corp.example"
    with tenant_context(world.a.tenant):
        sso.save_sso_connection(
            actor(world.a, "owner"), issuer=issuer, client_id="c", client_secret="s", domains=["alpha.test"]
        )
    adapter = TenantOIDCAdapter(rf.get("/"), "tenant-alpha")
    adapter._openid_config = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/keys",
        "userinfo_endpoint": f"{issuer}/userinfo",
        endpoint: f"http://login.alpha-corp.example/{endpoint}",
    }

    with pytest.raises(OAuth2Error, match=f"{endpoint} is not an https URL"):
        adapter.openid_config  # noqa: B018

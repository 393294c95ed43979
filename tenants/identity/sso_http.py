"""The HTTP session for every request the portal makes to a tenant's identity provider.

The issuer and every URL its discovery document names (jwks_uri, token_endpoint,
userinfo_endpoint) come from a tenant, so none of them may point the server at
itself, the cloud metadata service or the internal network. Checking the host
name when the issuer is saved is not enough: a name can resolve anywhere, and
resolve differently a moment later (the save-time check, `check_host`, is for a
clear form error). So the check that counts is on the socket: once it is
connected, its peer address must be a public one, or it is closed before a
byte is sent. Each redirect hop opens its own connection and is checked the
same way. Proxies are not used (the peer would be the proxy).

SSO_ALLOW_LOOPBACK_ISSUERS (development, and the tests' fake IdP) lifts the check.
"""

from __future__ import annotations

import functools
import ipaddress
import socket

import requests
from django.conf import settings
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


class NonPublicAddress(OSError):
    """The IdP's host name led to an address the portal must not reach.

    An OSError, so urllib3 and requests report it as a connection error
    (requests.ConnectionError), which the sign-in views already turn into an error page.
    """


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


# Addresses where clouds serve instance metadata and credentials (AWS, GCP, Azure; AWS over IPv6; Alibaba).
METADATA_ADDRESSES = frozenset({"169.254.169.254", "fd00:ec2::254", "100.100.100.200"})


def why_not_public(address: str) -> str | None:
    """None for a public address, else what kind of internal address it is (for error messages)."""
    if is_public_address(address):
        return None
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if str(ip) in METADATA_ADDRESSES:
        return "the cloud metadata service"
    for kind, words in (
        ("loopback", "a loopback address"),
        ("link_local", "a link-local address"),
        ("private", "a private address"),
        ("multicast", "a multicast address"),
        ("unspecified", "an unspecified address"),
    ):
        if getattr(ip, f"is_{kind}"):
            return words
    return "not a public address"


class UnresolvableHost(OSError):
    """The IdP's host name has no address (or the resolver failed)."""


def resolve(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to, as a connection to it would find them."""
    return sorted({answer[4][0] for answer in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})


def check_host(host: str, port: int) -> None:
    """Resolve `host` as a connection would and raise unless every address it has is public.

    For a clear error when the issuer is saved; the connection itself is checked
    again (`check_peer`), as a name may resolve differently later. Raises
    UnresolvableHost or NonPublicAddress; SSO_ALLOW_LOOPBACK_ISSUERS lifts the check.
    """
    if settings.SSO_ALLOW_LOOPBACK_ISSUERS:
        return
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise UnresolvableHost(f"{host} could not be resolved.") from exc
    if not addresses:
        raise UnresolvableHost(f"{host} could not be resolved.")
    for address in addresses:
        reason = why_not_public(address)
        if reason is not None:
            raise NonPublicAddress(f"{host} resolves to {address}, {reason}.")


def check_peer(sock: socket.socket, host: str) -> None:
    """Close `sock` and raise NonPublicAddress unless it is connected to a public address."""
    if settings.SSO_ALLOW_LOOPBACK_ISSUERS:
        return
    address = sock.getpeername()[0]
    if not is_public_address(address):
        sock.close()
        raise NonPublicAddress(f"{host} is at {address}, not a public address of an identity provider.")


class _CheckedHTTPConnection(HTTPConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        check_peer(sock, self.host)
        return sock


class _CheckedHTTPSConnection(HTTPSConnection):
    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        check_peer(sock, self.host)
        return sock


class _CheckedHTTPConnectionPool(HTTPConnectionPool):
    ConnectionCls = _CheckedHTTPConnection


class _CheckedHTTPSConnectionPool(HTTPSConnectionPool):
    ConnectionCls = _CheckedHTTPSConnection


class PublicOnlyAdapter(HTTPAdapter):
    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _CheckedHTTPConnectionPool,
            "https": _CheckedHTTPSConnectionPool,
        }

    def send(self, request, *args, **kwargs):
        kwargs["proxies"] = None
        return super().send(request, *args, **kwargs)


def session(timeout: float | None = None) -> requests.Session:
    """A requests session that reaches public addresses only; `timeout` applies to every request."""
    http = requests.Session()
    adapter = PublicOnlyAdapter(max_retries=0)
    http.mount("http://", adapter)
    http.mount("https://", adapter)
    if timeout is not None:
        http.request = functools.partial(http.request, timeout=timeout)
    return http

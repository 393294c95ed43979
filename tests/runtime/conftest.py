"""Fixtures for the runtime tests: a signing key, its JWKS on loopback, a verifier, a live runtime.

None of these tests touches the database.
"""

from __future__ import annotations

import pytest

from agents.runtime.auth import HttpKeyProvider, TokenVerifier
from agents.runtime.host import RuntimeHost
from agents.runtime.server import RuntimeApp
from tests.runtime import helpers


@pytest.fixture
def signing_key() -> helpers.SigningKey:
    return helpers.SigningKey(kid="key-1")


@pytest.fixture
def jwks(signing_key):
    with helpers.JwksServer([signing_key]) as server:
        yield server


@pytest.fixture
def verifier(jwks) -> TokenVerifier:
    return TokenVerifier(HttpKeyProvider(jwks.jwks_url, timeout=2), issuer=helpers.ISSUER)


@pytest.fixture
def token(signing_key) -> str:
    return helpers.mint(signing_key)


@pytest.fixture
def runtime_url(verifier):
    """A real runtime server on 127.0.0.1 with the offline model."""
    with helpers.serve_asgi(RuntimeApp(RuntimeHost(verifier))) as url:
        yield url

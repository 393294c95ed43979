"""Signing keys: create, rotate, load, publish (JWKS).

Keys are ES256 (P-256). The private half is stored encrypted with Fernet under
a key derived from SECRET_KEY, so a copy of the database alone cannot mint
tokens. Public keys are cached in-process for KEY_CACHE_SECONDS; rotation in
this process clears the cache, other processes see it within that time.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from jwt.algorithms import ECAlgorithm

from tenants.identity.models import KeyStatus, SigningKey

ALGORITHM = "ES256"
KEY_CACHE_SECONDS = 30


def _fernet() -> Fernet:
    digest = hashlib.sha256(f"signing-keys:{settings.SECRET_KEY}".encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


@dataclass(frozen=True)
class PublicKey:
    kid: str
    algorithm: str
    key: object  # cryptography public key
    jwk: dict


def _public_jwk(private_key: ec.EllipticCurvePrivateKey, kid: str) -> dict:
    jwk = json.loads(ECAlgorithm.to_jwk(private_key.public_key()))
    jwk.update({"kid": kid, "use": "sig", "alg": ALGORITHM})
    return jwk


def create_key(status: str = KeyStatus.ACTIVE) -> SigningKey:
    private_key = ec.generate_private_key(ec.SECP256R1())
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    kid = f"{timezone.now():%Y%m%d}-{secrets.token_hex(6)}"
    return SigningKey.objects.create(
        kid=kid,
        algorithm=ALGORITHM,
        private_key_encrypted=_fernet().encrypt(pem).decode(),
        public_jwk=_public_jwk(private_key, kid),
        status=status,
    )


def rotate() -> tuple[SigningKey, list[SigningKey]]:
    """New active key; the old active one retires gracefully; long-retiring ones leave.

    A retiring key keeps verifying the tokens it signed until the longest token
    lifetime (plus leeway) has passed since it stopped signing.
    """
    grace = timedelta(seconds=max_token_lifetime_seconds() + settings.TOKEN_LEEWAY_SECONDS)
    now = timezone.now()
    with transaction.atomic():
        SigningKey.objects.select_for_update().filter(status=KeyStatus.ACTIVE).update(
            status=KeyStatus.RETIRING, retiring_since=now
        )
        retired = list(SigningKey.objects.filter(status=KeyStatus.RETIRING, retiring_since__lte=now - grace))
        SigningKey.objects.filter(pk__in=[k.pk for k in retired]).update(status=KeyStatus.RETIRED, retired_at=now)
        key = create_key()
    clear_cache()
    return key, retired


def retire_expired() -> int:
    grace = timedelta(seconds=max_token_lifetime_seconds() + settings.TOKEN_LEEWAY_SECONDS)
    now = timezone.now()
    count = SigningKey.objects.filter(status=KeyStatus.RETIRING, retiring_since__lte=now - grace).update(
        status=KeyStatus.RETIRED, retired_at=now
    )
    clear_cache()
    return count


def max_token_lifetime_seconds() -> int:
    return max(settings.TOKEN_LIFETIME_SECONDS, settings.EXCHANGED_TOKEN_LIFETIME_SECONDS)


_lock = threading.Lock()
_cache: dict[str, object] = {"at": 0.0, "public": {}, "private": {}, "active": None}


def clear_cache() -> None:
    with _lock:
        _cache.update(at=0.0, public={}, private={}, active=None)


def verification_keys() -> dict[str, PublicKey]:
    """kid → public key, for every key that may verify (active and retiring)."""
    with _lock:
        if time.monotonic() - _cache["at"] < KEY_CACHE_SECONDS and _cache["public"]:
            return _cache["public"]  # type: ignore[return-value]
    keys = {}
    for row in SigningKey.objects.exclude(status=KeyStatus.RETIRED):
        keys[row.kid] = PublicKey(
            kid=row.kid, algorithm=row.algorithm, key=ECAlgorithm.from_jwk(row.public_jwk), jwk=row.public_jwk
        )
    with _lock:
        _cache.update(at=time.monotonic(), public=keys)
    return keys


def signing_key() -> tuple[str, object]:
    """(kid, private key) of the active key, creating the first key on first use."""
    with _lock:
        cached_active = _cache.get("active")
        if cached_active is not None and time.monotonic() - cached_active[0] < KEY_CACHE_SECONDS:
            kid = cached_active[1]
            private = _cache["private"].get(kid)  # type: ignore[union-attr]
            if private is not None:
                # A rotation elsewhere is seen within KEY_CACHE_SECONDS; until then this
                # process signs with the now-retiring key, whose tokens still verify.
                return kid, private
    row = SigningKey.objects.filter(status=KeyStatus.ACTIVE).first()
    if row is None:
        try:
            with transaction.atomic():
                row = SigningKey.objects.select_for_update().filter(status=KeyStatus.ACTIVE).first() or create_key()
        except IntegrityError:
            # Another worker thread or process created the first key at the same moment (the
            # lock above has no row to hold yet, the one-active-key constraint decides): use it.
            row = SigningKey.objects.get(status=KeyStatus.ACTIVE)
        clear_cache()
    with _lock:
        cached = _cache["private"].get(row.kid)  # type: ignore[union-attr]
    if cached is None:
        pem = _fernet().decrypt(row.private_key_encrypted.encode())
        cached = serialization.load_pem_private_key(pem, password=None)
        with _lock:
            _cache["private"][row.kid] = cached  # type: ignore[index]
    with _lock:
        _cache["active"] = (time.monotonic(), row.kid)
    return row.kid, cached


def jwks() -> dict:
    return {"keys": [key.jwk for key in verification_keys().values()]}

"""Operator API tokens: a staff member's personal credential for /api/v1/operator/… .

The token is `tpo_<key_id>_<secret>`: `key_id` (12 hex characters) finds the row, the
secret is secrets.token_urlsafe(32); only the SHA-256 digest of the whole token is kept,
and it is compared in constant time. The token is shown once, when it is created.

A token authenticates as its owner while it is neither revoked nor expired and the owner
is still an active staff member (read on every request: taking away staff stops every
token at once). It carries scopes from a small fixed set; which scope each operator
route needs is declared on the route (portal.operator.api).

Whatever is done with a token is audited as its owner, with the token named in the
entry's `after` (`via_operator_token`), see `acting_with`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
from contextlib import contextmanager

from django.db import transaction
from django.utils import timezone

from tenants import audit
from tenants.context import all_tenants
from tenants.identity.models import OperatorToken
from tenants.services import OPERATOR_REASON, ServiceError, _require_operator

PREFIX = "tpo_"
BILLING_READ = "operator:billing:read"
CATALOGUE_READ = "operator:catalogue:read"
CATALOGUE_WRITE = "operator:catalogue:write"
SCOPES: dict[str, str] = {
    BILLING_READ: "Read every tenant's revenue, cost and margin, and invoices",
    CATALOGUE_READ: "Read the shared agent registry and shared skills",
    CATALOGUE_WRITE: "Draft, submit, review and roll back shared agents; create and change shared skills",
}
DEFAULT_DAYS = 90
MAX_DAYS = 365
# last_used_at is written at most this often per token: an automation calling in a loop
# must not turn every read into a write.
LAST_USED_EVERY = dt.timedelta(minutes=1)

_TOKEN = re.compile(r"tpo_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")


class Refused(Exception):
    """The token cannot be used. `known`: the token is genuine (the caller holds its secret)
    but revoked or expired, and may be told which; otherwise it is just invalid."""

    def __init__(self, detail: str, *, known: bool = False):
        super().__init__(detail)
        self.detail = detail
        self.known = known


def digest(raw: str) -> str:
    # A 256-bit random secret: a fast hash is enough (nothing to brute-force).
    return hashlib.sha256(raw.encode()).hexdigest()


def looks_like_one(raw: str) -> bool:
    return raw.startswith(PREFIX)


def create(owner, *, name: str, scopes, days: int = DEFAULT_DAYS, ip: str | None = None) -> tuple[OperatorToken, str]:
    """A new token of `owner` (an active staff member) and the token itself, which is not kept."""
    _require_operator(owner)
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise ServiceError("Give the token a name of at most 100 characters.")
    chosen = sorted(set(scopes or ()))
    if not chosen:
        raise ServiceError("Choose at least one scope.")
    unknown = [s for s in chosen if s not in SCOPES]
    if unknown:
        raise ServiceError(f"Unknown scopes: {', '.join(unknown)}.")
    if not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise ServiceError(f"A token expires after 1 to {MAX_DAYS} days.")
    key_id = secrets.token_hex(6)
    raw = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    now = timezone.now()
    token = OperatorToken(
        owner=owner,
        name=name,
        key_id=key_id,
        token_hash=digest(raw),
        scopes=chosen,
        created_at=now,
        expires_at=now + dt.timedelta(days=days),
    )
    with transaction.atomic(), all_tenants(OPERATOR_REASON):
        token.save(force_insert=True)
        audit.record(
            "operator_token.created",
            actor=owner,
            target=token,
            after={"name": name, "prefix": token.prefix, "scopes": chosen, "expires_at": token.expires_at.isoformat()},
            ip=ip,
        )
    return token, raw


def tokens_of(owner):
    return OperatorToken.objects.filter(owner=owner)


def revoke(user, token_id, *, ip: str | None = None) -> OperatorToken:
    """Revoke one of `user`'s own tokens (someone else's is not found: ServiceError)."""
    _require_operator(user)
    token = tokens_of(user).filter(pk=token_id).first() if str(token_id).isdigit() else None
    if token is None:
        raise ServiceError("No such token.")
    now = timezone.now()
    # Conditional: two revokes at once record one revocation.
    if OperatorToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=now) != 1:
        raise ServiceError("The token was already revoked.")
    token.revoked_at = now
    with all_tenants(OPERATOR_REASON):
        audit.record(
            "operator_token.revoked",
            actor=user,
            target=token,
            before={"status": "active"},
            after={"status": "revoked"},
            ip=ip,
        )
    return token


def authenticate(raw: str) -> OperatorToken:
    """The token `raw` names, with its owner, if it may be used now; else Refused."""
    match = _TOKEN.fullmatch(raw)
    if match is None:
        raise Refused("The operator token is invalid.")
    token = OperatorToken.objects.select_related("owner").filter(key_id=match[1]).first()
    if token is None or not hmac.compare_digest(token.token_hash, digest(raw)):
        raise Refused("The operator token is invalid.")
    owner = token.owner
    if not owner.is_active:
        raise Refused("The operator token is invalid.")
    if token.revoked_at is not None:
        raise Refused("This operator token was revoked.", known=True)
    if token.is_expired:
        raise Refused("This operator token expired; create a new one in the operator console.", known=True)
    _touch(token)
    return token


def _touch(token: OperatorToken) -> None:
    now = timezone.now()
    if token.last_used_at is not None and now - token.last_used_at < LAST_USED_EVERY:
        return
    # Conditional, so that parallel requests within the minute write once.
    OperatorToken.objects.filter(pk=token.pk).exclude(last_used_at__gt=now - LAST_USED_EVERY).update(last_used_at=now)
    token.last_used_at = now


@contextmanager
def acting_with(token: OperatorToken | None):
    """While it is open, every audit entry names `token` (None: nothing to add)."""
    if token is None:
        yield
        return
    with audit.via({"via_operator_token": {"id": token.pk, "name": token.name, "prefix": token.prefix}}):
        yield

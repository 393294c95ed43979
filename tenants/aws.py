"""AWS credentials for one tenant: every AWS call the portal makes for a tenant signs with them.

Where tenants' AWS bindings apply (tenants.models.aws_bindings_apply: not on the embedded
`local` runtime), the portal assumes a role per tenant with STS AssumeRole:

* the tenant's own `iam_role_arn` binding when it is dedicated (silo) and has one, so its
  calls stay inside its own IAM boundary;
* otherwise the platform role AWS_TENANT_ROLE_ARN (pool and bridge tenants), whose policies
  can scope shared resources by the session tags (ABAC: ``aws:PrincipalTag/tenant_id``);
* with neither, None: the call uses the portal's own default credentials, as before.

The sites: the AgentCore runtime client (agents.runtime_gateway.client_for), AgentCore
Memory (agents.memory.stores.store_for), the AgentCore Gateway's SigV4 (agents.tools.agentcore),
Bedrock knowledge bases and their S3 sync (agents.knowledge.bedrock.client_for), Bedrock
Guardrails (agents.guardrails.backends.tenant_client) and `hybrid` embeddings
(agents.knowledge.hybrid.bedrock_client) — the last two for the tenant in context.

The session carries the tags ``tenant_id``, ``tier`` and ``deployment_model`` (``tenant_id``
transitive, so it survives role chaining) and the name ``portal-<slug>`` (CloudTrail shows
which tenant a call was for). The role's trust policy must allow ``sts:AssumeRole`` and
``sts:TagSession`` to the portal's own principal.

Why this lives in tenants/: it reads only the tenant (bindings, tier, region) and every room
that calls AWS for a tenant (runtime, memory, knowledge, tools) asks it, as they ask the
bindings.

The credentials are botocore's own refreshing kind (DeferredRefreshableCredentials over an
AssumeRoleCredentialFetcher): nothing is fetched until the first call is signed, then they are
reused by every client of the tenant's session until a third of their lifetime is left, when
one thread refreshes them (the others keep signing with the current ones until the last sixth,
when all wait). One boto3 session per (role, tenant, tags, region) and process, so two tenants
never share credentials, nor a client made from them.

Fail closed: when AssumeRole fails (access denied, no source credentials, STS unreachable)
signing raises TenantCredentialsError, a BotoCoreError, so the call is never sent, and never
with the portal's own credentials instead; the callers' existing handling of AWS errors
answers with a reason: `failure(exc)` says what any failed AWS call (this one included) means
for a person, in the same words for every room.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

from botocore.credentials import (
    AssumeRoleCredentialFetcher,
    CredentialProvider,
    CredentialResolver,
    DeferredRefreshableCredentials,
)
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    ReadTimeoutError,
)
from django.conf import settings

from tenants.models import Tenant, aws_bindings_apply

log = logging.getLogger(__name__)

CREDENTIALS_METHOD = "tenant-assume-role"
TRANSITIVE_TAG_KEYS = ["tenant_id"]

# Session tag values may hold letters, digits, spaces and _ . : / = + - @ (256 at most).
_TAG_VALUE_DROPPED = re.compile(r"[^\w .:/=+\-@]", flags=re.ASCII)

_sessions: dict[tuple, Any] = {}
_sessions_lock = threading.Lock()
_default_session = None


class TenantCredentialsError(BotoCoreError):
    """The tenant's role could not be assumed; the AWS call was not made."""

    # No role ARN in the text: it may reach a tenant's page (a document's error); the log has it.
    fmt = "The AWS role of tenant {tenant} could not be assumed ({error_code})"


# AWS answers that trying again does not change: the portal's set-up (role, resource ids,
# request) is wrong. S3 spells some without "Exception".
LASTING_ERROR_CODES = frozenset(
    {
        "AccessDeniedException",
        "ResourceNotFoundException",
        "ValidationException",
        "AccessDenied",
        "NoSuchBucket",
        "UnrecognizedClientException",
    }
)


# Why AssumeRole failed, when waiting may help: STS throttled or out of reach. Anything else
# (AccessDenied, no source credentials, a bad trust policy) is the set-up's.
_STS_PASSING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
    }
)


@dataclass(frozen=True)
class Failure:
    """What a failed AWS call for a tenant means for a person.

    `reason`: a few words, with the service as "it" ("AWS answered ThrottlingException",
    "its endpoint could not be reached"), never an ARN, request id or secret, so that it
    may reach a tenant's page; `transient`: whether trying again later may help (else the
    set-up must be fixed); `code`: the AWS error code or botocore's exception name, for the log."""

    reason: str
    transient: bool
    code: str

    @property
    def advice(self) -> str:
        return advice(self.transient)


def advice(transient: bool) -> str:
    """What a person can do about a failed AWS call: wait, or have the set-up fixed."""
    return "Try again in a moment." if transient else "Ask your provider's operator to fix it."


def failure(exc: Exception) -> Failure:
    """The meaning of `exc`, a BotoCoreError or ClientError of a call made for a tenant: one
    answer for every room that calls AWS (knowledge, memory), so they say the same things."""
    if isinstance(exc, TenantCredentialsError):
        code = exc.kwargs.get("error_code") or type(exc).__name__
        return Failure("the organisation's AWS role could not be assumed", code in _STS_PASSING_CODES, code)
    if isinstance(exc, NoCredentialsError):
        return Failure("the portal has no AWS credentials for it", False, type(exc).__name__)
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code") or "ClientError"
        return Failure(f"AWS answered {code}", code not in LASTING_ERROR_CODES, code)
    if isinstance(exc, EndpointConnectionError):  # ConnectTimeoutError too
        return Failure("its endpoint could not be reached", True, type(exc).__name__)
    if isinstance(exc, ReadTimeoutError):
        return Failure("it did not answer in time", True, type(exc).__name__)
    return Failure("it could not be reached", True, type(exc).__name__)


def role_for(tenant: Tenant) -> str:
    """The role the portal assumes for `tenant`'s AWS calls; "" = the portal's own credentials
    (also always on the embedded `local` runtime, where nothing reaches AWS)."""
    if not aws_bindings_apply():
        return ""
    bindings = tenant.bindings
    if bindings.dedicated and bindings.iam_role_arn:
        return bindings.iam_role_arn
    return settings.AWS_TENANT_ROLE_ARN


def _tag_value(value: str) -> str:
    return _TAG_VALUE_DROPPED.sub("_", value)[:256]


def assume_role_params(tenant: Tenant, role_arn: str) -> dict:
    """The AssumeRole parameters for `tenant` (RoleArn included)."""
    return {
        "RoleArn": role_arn,
        "RoleSessionName": f"portal-{tenant.slug}"[:64],
        "DurationSeconds": settings.AWS_TENANT_ROLE_SESSION_SECONDS,
        "Tags": [
            {"Key": "tenant_id", "Value": _tag_value(str(tenant.pk))},
            {"Key": "tier", "Value": _tag_value(tenant.tier.slug)},
            {"Key": "deployment_model", "Value": _tag_value(tenant.deployment_model)},
        ],
        "TransitiveTagKeys": list(TRANSITIVE_TAG_KEYS),
    }


def make_sts_client(region: str, **credentials):
    """The STS client AssumeRole is sent with (the tenant's regional endpoint), signed with
    the portal's own credentials; a seam for tests (botocore Stubber)."""
    import boto3

    return boto3.client("sts", region_name=region, **credentials)


def _portal_credentials():
    """The portal's own credentials (default chain: environment, profile, instance or task
    role), the source AssumeRole is signed with; None when there are none."""
    global _default_session
    import boto3

    with _sessions_lock:
        if _default_session is None:
            _default_session = boto3.Session()
        session = _default_session
    return session.get_credentials()


class _TenantRoleCredentials:
    """Builds the refreshing credentials of one (role, tenant); see the module docstring."""

    def __init__(self, tenant: Tenant, role_arn: str):
        self.tenant_slug = tenant.slug
        self.role_arn = role_arn
        self.region = tenant.region
        self.params = assume_role_params(tenant, role_arn)
        lifetime = self.params["DurationSeconds"]
        # botocore's defaults (refresh 15 and 10 minutes before expiry) would refresh 15-minute
        # credentials on every call; a third and a sixth of the lifetime, capped at those.
        self.advisory = min(15 * 60, lifetime // 3)
        self.mandatory = min(10 * 60, lifetime // 6)
        self._fetcher = None
        self._lock = threading.Lock()

    def _create_sts_client(self, service_name: str, **credentials):
        return make_sts_client(self.region, **credentials)

    def fetch(self) -> dict:
        try:
            with self._lock:
                if self._fetcher is None:
                    source = _portal_credentials()
                    if source is None:
                        raise NoCredentialsError()
                    self._fetcher = AssumeRoleCredentialFetcher(
                        self._create_sts_client,
                        source,
                        self.role_arn,
                        extra_args={k: v for k, v in self.params.items() if k != "RoleArn"},
                        # The fetcher's own cache must agree with when a refresh is asked for.
                        expiry_window_seconds=self.advisory,
                    )
                fetcher = self._fetcher
            return fetcher.fetch_credentials()
        except (BotoCoreError, ClientError) as exc:
            if isinstance(exc, ClientError):
                code = exc.response.get("Error", {}).get("Code") or "ClientError"
            else:
                code = type(exc).__name__
            log.error("AssumeRole of %s for tenant %s failed: %s", self.role_arn, self.tenant_slug, code)
            raise TenantCredentialsError(role_arn=self.role_arn, tenant=self.tenant_slug, error_code=code) from exc

    def credentials(self) -> _RoleCredentials:
        return _RoleCredentials(self.fetch, advisory=self.advisory, mandatory=self.mandatory)


class _RoleCredentials(DeferredRefreshableCredentials):
    """Fetched on first use; refreshed `advisory` seconds before expiry by one thread, and by
    all (blocking) past `mandatory` (RefreshableCredentials' own two windows)."""

    def __init__(self, refresh_using, *, advisory: int, mandatory: int):
        super().__init__(refresh_using=refresh_using, method=CREDENTIALS_METHOD)
        self._advisory_refresh_timeout = advisory
        self._mandatory_refresh_timeout = mandatory


class _Provider(CredentialProvider):
    METHOD = CREDENTIALS_METHOD

    def __init__(self, credentials: _RoleCredentials):
        self._credentials = credentials

    def load(self) -> _RoleCredentials:
        return self._credentials


def _make_session(tenant: Tenant, role_arn: str):
    import boto3
    import botocore.session

    core = botocore.session.Session()
    # The tenant's credentials and nothing else: no fallback to the default chain.
    provider = _Provider(_TenantRoleCredentials(tenant, role_arn).credentials())
    core.register_component("credential_provider", CredentialResolver([provider]))
    return boto3.Session(botocore_session=core, region_name=tenant.region)


def _session_key(tenant: Tenant, role_arn: str) -> tuple:
    """Everything the session's AssumeRole carries: a tenant renamed, moved to another tier
    or deployment model, or region gets a new session with the tags it has now."""
    return (role_arn, tenant.pk, tenant.slug, tenant.tier.slug, tenant.deployment_model, tenant.region)


def _entry(tenant: Tenant) -> tuple[Any, dict] | None:
    role_arn = role_for(tenant)
    if not role_arn:
        return None
    key = _session_key(tenant, role_arn)
    with _sessions_lock:
        entry = _sessions.get(key)
        if entry is None:
            entry = _sessions[key] = (_make_session(tenant, role_arn), {})
    return entry


def session_for(tenant: Tenant):
    """The boto3 session whose clients sign as `tenant`'s role; None when the tenant's calls
    use the portal's own credentials (role_for is ""). Nothing is sent to STS here."""
    entry = _entry(tenant)
    return entry[0] if entry else None


def client(tenant: Tenant | None, service: str, *, region_name: str | None = None, config=None, purpose: str = ""):
    """A client of `service` signed as `tenant`'s role, made once per session, region,
    purpose and process (boto3 clients are thread-safe); None when the tenant (or no tenant)
    uses the portal's own credentials, for the caller's usual client.

    A client keeps the `config` (timeouts, retries) it was made with, so a caller with a
    config of its own names a `purpose` of its own: the guardrail checks' short timeouts
    must not become the embeddings' (same service and region), nor the other way round."""
    entry = _entry(tenant) if tenant is not None else None
    if entry is None:
        return None
    session, clients = entry
    key = (service, region_name or tenant.region, purpose)
    with _sessions_lock:
        made = clients.get(key)
        if made is None:
            made = clients[key] = session.client(service, region_name=key[1], config=config)
    return made


def client_key(tenant: Tenant) -> tuple:
    """What a process-wide cache of a tenant's AWS clients must key on besides the resource:
    the session its credentials come from (role, tenant and the tags it was assumed with),
    so a client never outlives a change of the tenant's tags; ("",) for the portal's own."""
    role_arn = role_for(tenant)
    return _session_key(tenant, role_arn) if role_arn else ("",)


def forget_sessions() -> None:
    """Drop every cached session (tests; a process that must re-read roles)."""
    global _default_session
    with _sessions_lock:
        _sessions.clear()
        _default_session = None

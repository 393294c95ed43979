"""Runtime clients: how the portal's Celery task calls an agent runtime.

One interface, three transports (architecture §5):

* :class:`LocalRuntimeClient` runs the reference agent in-process, through the
  same :class:`~agents.runtime.host.RuntimeHost` a deployed runtime uses, so the
  embedded default and the tests go through the real token verification and
  payload parsing (keys come from a callable the portal supplies);
* :class:`HttpRuntimeClient` POSTs to any server that speaks the AgentCore
  Runtime contract (``/invocations``, ``/ping``), JSON or ``text/event-stream``;
* :class:`AgentCoreRuntimeClient` calls Amazon Bedrock AgentCore Runtime with
  boto3 (``bedrock-agentcore`` ``invoke_agent_runtime``).

``invoke(request, context)`` sends the call before it returns, so a refused
call raises from ``invoke`` itself, and returns an iterator of contract events
ending with ``done``. Failures the Celery task should retry raise
:class:`TransientRuntimeError` (connection errors, timeouts, 5xx, 429, a stream
cut before ``done``); calls that will fail again the same way raise
:class:`RuntimeRejected` (4xx: bad token, wrong tenant, bad payload). Failures
of the agent itself are not exceptions: they arrive as an ``error`` event whose
``retryable`` says whether another attempt may help. Iterate the events to the
end or ``close()`` the iterator, which releases the connection.

Why the AgentCore headers are added in a ``before-sign`` hook: the tenant
headers are not parameters of ``InvokeAgentRuntime``, so boto3 would refuse
them; the hook adds them to the HTTP request just before SigV4 signs it, so
they are covered by the signature. The per-call values reach the hook through
botocore's request context (a private parameter popped in
``provide-client-params``), never through shared state, so one boto3 client can
serve many threads. SigV4 owns the ``Authorization`` header (the signer replaces
it), so with IAM auth the act-on-behalf token travels in
``X-Amzn-Bedrock-AgentCore-Runtime-Custom-Authorization``; with ``auth="jwt"``
(a runtime configured with a custom JWT authorizer) the request is not SigV4
signed and the token goes in ``Authorization: Bearer`` as AgentCore requires.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal
from urllib.parse import urlsplit

from agents.runtime.agent import ReferenceAgent
from agents.runtime.auth import DEFAULT_AUDIENCE, DEFAULT_LEEWAY_SECONDS, CallableKeyProvider, TokenVerifier
from agents.runtime.contract import (
    HEADER_AUTHORIZATION,
    HEADER_FORWARDED_AUTHORIZATION,
    JSON_CONTENT_TYPE,
    MAX_SSE_LINE,
    SSE_CONTENT_TYPE,
    ContractError,
    Done,
    Event,
    InvocationContext,
    InvocationRequest,
    InvocationResult,
    RequestRefused,
    iter_sse_events,
)
from agents.runtime.host import RuntimeHost
from agents.runtime.models import ProviderRegistry

logger = logging.getLogger(__name__)

MAX_JSON_RESPONSE_BYTES = 16 * 1024 * 1024


# --- errors ----------------------------------------------------------------------------------


class RuntimeClientError(Exception):
    """The runtime could not be called or answered outside the contract."""

    def __init__(self, message: str, *, status: int | None = None, code: str = ""):
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class TransientRuntimeError(RuntimeClientError):
    """Worth retrying later: connection errors, timeouts, 5xx, 429, a stream cut short."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "", retry_after: float | None = None):
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after


class RuntimeRejected(RuntimeClientError):
    """The runtime refused the call (4xx); the same call will be refused again."""


class RuntimeProtocolError(RuntimeClientError):
    """The runtime answered something that is not the contract (a bug on one side)."""


def _refusal(exc: RequestRefused) -> RuntimeClientError:
    if exc.status >= 500 or exc.status == 429:
        return TransientRuntimeError(exc.message, status=exc.status, code=exc.code)
    return RuntimeRejected(exc.message, status=exc.status, code=exc.code)


def _checked_events(events: Iterable[Event], source: str) -> Iterator[Event]:
    """Pass events through; a stream that ends without ``done`` was cut: transient.

    Closing this iterator closes `events` too (for the local runtime that ends
    the invocation at once, instead of whenever the garbage collector runs)."""
    try:
        for event in events:
            yield event
            if isinstance(event, Done):
                return
    except ContractError as exc:
        raise RuntimeProtocolError(f"{source} sent an event outside the contract: {exc}")
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()
    raise TransientRuntimeError(f"{source} ended the stream before 'done'")


# --- the interface ------------------------------------------------------------------------------


class RuntimeClient(ABC):
    name: str = ""

    @abstractmethod
    def invoke(self, request: InvocationRequest, context: InvocationContext) -> Iterator[Event]:
        """Send one invocation; the events of its answer, ending with ``done``."""

    def ping(self) -> dict[str, Any]:
        """The runtime's health: ``{"status": "Healthy"|"HealthyBusy", "time_of_last_update": int}``.

        AgentCore has no ping operation in its API (it pings its runtimes itself), so
        a client without one says so with a RuntimeClientError the caller can show."""
        raise RuntimeClientError(f"the {self.name} runtime offers no ping; its platform checks health itself")

    def invoke_and_collect(self, request: InvocationRequest, context: InvocationContext) -> InvocationResult:
        """The whole answer at once (for callers that do not relay deltas)."""
        return InvocationResult.from_events(self.invoke(request, context))


# --- local ----------------------------------------------------------------------------------------


class LocalRuntimeClient(RuntimeClient):
    name = "local"

    def __init__(self, host: RuntimeHost):
        self.host = host

    @classmethod
    def from_jwks(
        cls,
        jwks: Callable[[], Mapping[str, Any]],
        *,
        issuer: str,
        audience: str = DEFAULT_AUDIENCE,
        leeway: float = DEFAULT_LEEWAY_SECONDS,
        providers: ProviderRegistry | None = None,
        knowledge=None,
        tools=None,
        memory=None,
    ) -> LocalRuntimeClient:
        """A local runtime verifying tokens against `jwks()` (the portal passes ``keys.jwks``),
        retrieving through `knowledge` and running tools through `tools` (the portal passes
        its in-process gateways)."""
        verifier = TokenVerifier(CallableKeyProvider(jwks), issuer=issuer, audience=audience, leeway=leeway)
        return cls(RuntimeHost(verifier, ReferenceAgent(providers, knowledge=knowledge, tools=tools, memory=memory)))

    def invoke(self, request: InvocationRequest, context: InvocationContext) -> Iterator[Event]:
        try:
            # Serialised and parsed as over HTTP, so a request only the local runtime accepts cannot exist.
            prepared = self.host.prepare(context.to_headers(), request.to_json())
        except RequestRefused as exc:
            raise _refusal(exc)
        return _checked_events(self.host.run(prepared), "the local runtime")

    def ping(self) -> dict[str, Any]:
        return self.host.ping()


# --- plain HTTP -----------------------------------------------------------------------------------


def _retry_after(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value else None
    except ValueError:
        return None  # an HTTP date: rare enough to let the task's own backoff decide


def _error_document(body: bytes) -> tuple[str, str]:
    try:
        error = json.loads(body).get("error") or {}
        return str(error.get("code", "")), str(error.get("message", ""))
    except (ValueError, AttributeError):
        return "", body[:200].decode("utf-8", "replace")


class HttpRuntimeClient(RuntimeClient):
    """A runtime at `base_url` (e.g. ``http://runtime:8080``).

    ``connect_timeout`` bounds connecting; ``timeout`` bounds each wait for
    data (so a stream may run long as long as it keeps sending);
    ``max_duration`` bounds the whole invocation.
    """

    name = "http"

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        max_duration: float = 900.0,
        max_idle: int = 64,
    ):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the runtime URL must be http(s)://host[:port][/prefix]")
        self.base_url = base_url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_duration = max_duration
        self.max_idle = max_idle
        self._idle: list[http.client.HTTPConnection] = []
        self._idle_lock = threading.Lock()
        self._pid = os.getpid()

    # Keep-alive: a connection whose answer was read to its end goes back to a small pool
    # shared by the process's threads, so the next call skips the TCP (and TLS) handshake;
    # with a 200 ms runtime a worker makes dozens of calls a second to the same host.

    def _checkout(self) -> tuple[http.client.HTTPConnection, bool]:
        """An idle kept-alive connection (reused=True), or a new one not yet connected."""
        with self._idle_lock:
            if self._pid != os.getpid():  # forked: the parent's sockets are not ours to use
                self._idle, self._pid = [], os.getpid()
            if self._idle:
                return self._idle.pop(), True
        connection_class = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return connection_class(self._host, self._port, timeout=self.connect_timeout), False

    def _release(self, connection: http.client.HTTPConnection, response: http.client.HTTPResponse) -> None:
        """Keep the connection if its answer was read to the end and the server keeps it open."""
        if response.isclosed() and not response.will_close and connection.sock is not None:
            with self._idle_lock:
                if len(self._idle) < self.max_idle and self._pid == os.getpid():
                    self._idle.append(connection)
                    return
        connection.close()

    def close(self) -> None:
        """Close the idle connections (calls in flight keep theirs until they end)."""
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]):
        while True:
            connection, reused = self._checkout()
            try:
                if connection.sock is None:
                    connection.connect()
                    connection.sock.settimeout(self.timeout)
                connection.request(method, self._prefix + path, body=body, headers=headers)
                return connection, connection.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                connection.close()
                # A kept-alive connection the server closed while it was idle fails on first
                # use without an answer; the call goes again on a new one (as urllib3 does).
                if reused and isinstance(exc, ConnectionError):
                    continue
                raise TransientRuntimeError(f"{method} {self.base_url}{path}: {exc or exc.__class__.__name__}")

    def _raise_for_status(self, connection, response) -> None:
        if 200 <= response.status < 300:
            return
        try:
            body = response.read(64 * 1024)
        except (OSError, http.client.HTTPException):
            body = b""
        finally:
            connection.close()
        code, message = _error_document(body)
        message = message or f"the runtime answered {response.status}"
        if response.status == 429 or response.status >= 500:
            raise TransientRuntimeError(
                message, status=response.status, code=code, retry_after=_retry_after(response.getheader("Retry-After"))
            )
        raise RuntimeRejected(message, status=response.status, code=code)

    def invoke(self, request: InvocationRequest, context: InvocationContext) -> Iterator[Event]:
        headers = {
            **context.to_headers(),
            "Content-Type": JSON_CONTENT_TYPE,
            "Accept": f"{SSE_CONTENT_TYPE}, {JSON_CONTENT_TYPE}" if request.stream else JSON_CONTENT_TYPE,
        }
        started = time.monotonic()
        connection, response = self._request("POST", "/invocations", request.to_json(), headers)
        self._raise_for_status(connection, response)
        content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
        if content_type == SSE_CONTENT_TYPE:
            return self._stream(connection, response, started)
        try:
            if content_type != JSON_CONTENT_TYPE:
                raise RuntimeProtocolError(f"the runtime answered with {content_type or 'no content type'}")
            body = response.read(MAX_JSON_RESPONSE_BYTES + 1)
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise TransientRuntimeError(f"reading the runtime's answer failed: {exc}")
        except RuntimeProtocolError:
            connection.close()
            raise
        self._release(connection, response)
        if len(body) > MAX_JSON_RESPONSE_BYTES:
            raise RuntimeProtocolError("the runtime's answer is too large")
        try:
            result = InvocationResult.from_document(json.loads(body))
            return iter(result.to_events())
        except (ValueError, ContractError) as exc:
            raise RuntimeProtocolError(f"the runtime's answer is not a contract document: {exc}")

    def _stream(self, connection, response, started: float) -> Iterator[Event]:
        def lines() -> Iterator[bytes]:
            while True:
                if time.monotonic() - started > self.max_duration:
                    raise TransientRuntimeError(f"the invocation ran longer than {self.max_duration:.0f} s")
                line = response.readline(MAX_SSE_LINE)
                if not line:
                    return
                yield line

        try:
            yield from _checked_events(iter_sse_events(lines()), "the runtime")
        except TimeoutError:
            raise TransientRuntimeError(f"the runtime sent nothing for {self.timeout:.0f} s")
        except (OSError, http.client.HTTPException) as exc:
            raise TransientRuntimeError(f"the runtime's stream broke: {exc or exc.__class__.__name__}")
        finally:
            # Kept only when the stream was read to its end (a stream left after "done" is
            # closed: reading on to its end could wait on a slow server).
            self._release(connection, response)

    def ping(self) -> dict[str, Any]:
        connection, response = self._request("GET", "/ping", None, {"Accept": JSON_CONTENT_TYPE})
        self._raise_for_status(connection, response)
        try:
            document = json.loads(response.read(64 * 1024))
        except (ValueError, OSError, http.client.HTTPException) as exc:
            connection.close()
            raise TransientRuntimeError(f"the runtime's ping answer is unreadable: {exc}")
        self._release(connection, response)
        if not isinstance(document, dict) or document.get("status") not in ("Healthy", "HealthyBusy"):
            raise RuntimeProtocolError(f"unexpected ping answer: {document!r}"[:300])
        return document


# --- Amazon Bedrock AgentCore Runtime -------------------------------------------------------------

_PARAM = "TenantPortalRuntimeHeaders"  # private call parameter, removed before botocore validates
_CONTEXT_KEY = "tenant_portal_runtime_headers"
_HOOK_ID = "tenant-portal-runtime-headers"
OPERATION = "bedrock-agentcore.InvokeAgentRuntime"
TRANSIENT_AGENTCORE_ERRORS = {
    "ThrottlingException",
    "InternalServerException",
    "ServiceUnavailableException",
    "RetryableConflictException",
}


def _take_call_headers(params: dict, context: dict, **kwargs) -> None:
    """provide-client-params: move our private parameter into the request context."""
    headers = params.pop(_PARAM, None)
    if headers is not None:
        context[_CONTEXT_KEY] = headers


def _add_call_headers(request, signature_version=None, **kwargs) -> None:
    """before-sign: put the tenant headers and the token on the request about to be signed."""
    import botocore

    call = request.context.get(_CONTEXT_KEY)
    if not call:
        return
    headers = dict(call["tenant"])
    if signature_version is botocore.UNSIGNED:
        headers[HEADER_AUTHORIZATION] = f"Bearer {call['token']}"
    else:
        headers[HEADER_FORWARDED_AUTHORIZATION] = f"Bearer {call['token']}"
    for name, value in headers.items():
        del request.headers[name]  # a retried request is signed again: replace, never duplicate
        request.headers[name] = value


class AgentCoreRuntimeClient(RuntimeClient):
    """An AgentCore Runtime (``agentRuntimeArn`` + endpoint ``qualifier``).

    ``auth="sigv4"`` (IAM, the default) signs with the worker's AWS credentials, or those
    of ``session`` (a boto3 session: the tenant's assumed role, tenants.aws);
    ``auth="jwt"`` sends unsigned requests authorised by the bearer token (a
    runtime with a custom JWT authorizer). Pass ``client`` to reuse or stub a
    boto3 ``bedrock-agentcore`` client; the hooks are registered on it.
    There is no ``ping``: AgentCore pings its runtimes itself and the service
    API offers no way to do it from outside.
    """

    name = "agentcore"

    def __init__(
        self,
        agent_runtime_arn: str,
        *,
        qualifier: str = "DEFAULT",
        client: Any = None,
        region_name: str | None = None,
        auth: Literal["sigv4", "jwt"] = "sigv4",
        read_timeout: float = 300.0,
        connect_timeout: float = 5.0,
        session: Any = None,
    ):
        if auth not in ("sigv4", "jwt"):
            raise ValueError("auth must be 'sigv4' or 'jwt'")
        self.agent_runtime_arn = agent_runtime_arn
        self.qualifier = qualifier
        self.auth = auth
        if client is None:
            import boto3
            import botocore
            from botocore.config import Config

            config = Config(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"mode": "standard", "max_attempts": 3},
                signature_version=botocore.UNSIGNED if auth == "jwt" else None,
            )
            # `session`: a tenant's (tenants.aws.session_for), whose role signs; else the default chain.
            client = (session or boto3).client("bedrock-agentcore", region_name=region_name, config=config)
        self.client = client
        events = client.meta.events
        events.register(f"provide-client-params.{OPERATION}", _take_call_headers, unique_id=f"{_HOOK_ID}-params")
        events.register(f"before-sign.{OPERATION}", _add_call_headers, unique_id=f"{_HOOK_ID}-sign")

    def request_params(self, request: InvocationRequest, context: InvocationContext) -> dict[str, Any]:
        return {
            "agentRuntimeArn": self.agent_runtime_arn,
            "qualifier": self.qualifier,
            "runtimeSessionId": context.session_id,
            "runtimeUserId": context.user_id,
            "contentType": JSON_CONTENT_TYPE,
            "accept": SSE_CONTENT_TYPE if request.stream else JSON_CONTENT_TYPE,
            "payload": request.to_json(),
        }

    def invoke(self, request: InvocationRequest, context: InvocationContext) -> Iterator[Event]:
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
        )

        call = {"tenant": context.tenant_headers(), "token": context.access_token}
        try:
            response = self.client.invoke_agent_runtime(**self.request_params(request, context), **{_PARAM: call})
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            message = f"AgentCore {code}: {error.get('Message', '')}"
            if code in TRANSIENT_AGENTCORE_ERRORS or (status or 0) >= 500 or status == 429:
                raise TransientRuntimeError(message, status=status, code=code)
            raise RuntimeRejected(message, status=status, code=code)
        except (EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError, ConnectionClosedError) as exc:
            raise TransientRuntimeError(f"AgentCore is unreachable: {exc}")
        except BotoCoreError as exc:  # credentials, configuration: retrying will not help
            raise RuntimeClientError(f"cannot call AgentCore: {exc}") from exc
        body = response["response"]
        content_type = (response.get("contentType") or "").split(";")[0].strip().lower()
        if content_type == SSE_CONTENT_TYPE:
            return self._stream(body)
        try:
            document = json.loads(body.read(MAX_JSON_RESPONSE_BYTES + 1))
            return iter(InvocationResult.from_document(document).to_events())
        except (ValueError, ContractError) as exc:
            raise RuntimeProtocolError(f"AgentCore's answer is not a contract document: {exc}")
        except BotoCoreError as exc:
            raise TransientRuntimeError(f"reading AgentCore's answer failed: {exc}")
        finally:
            body.close()

    def _stream(self, body) -> Iterator[Event]:
        from botocore.exceptions import BotoCoreError

        try:
            # Small reads, as AWS's own samples do: read(n) waits for n bytes, so a
            # big chunk size would hold back the first words of the answer.
            yield from _checked_events(iter_sse_events(body.iter_lines(chunk_size=64)), "AgentCore")
        except (BotoCoreError, OSError) as exc:
            raise TransientRuntimeError(f"AgentCore's stream broke: {exc}")
        finally:
            body.close()

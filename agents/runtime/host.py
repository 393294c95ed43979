"""What a runtime does with one invocation, whatever carries it: authenticate, parse, run.

The HTTP server and the in-process ``LocalRuntimeClient`` both call
:meth:`RuntimeHost.prepare` and :meth:`RuntimeHost.run`, so the embedded
default and the tests exercise the very checks a deployed runtime makes: the
same token verification, the same header and payload validation, the same
agent. Only the transport differs.

The order of the checks is deliberate: the token first (an anonymous caller
learns nothing, not even whether its payload would have parsed), then the
tenant headers against the token, then session and user ids, then the payload.

The host also keeps the ``/ping`` state: ``HealthyBusy`` while any invocation
runs (AgentCore uses it to avoid scaling a busy session's instance down), and
the time that state last changed.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from agents.runtime.agent import ReferenceAgent
from agents.runtime.auth import Caller, TokenVerifier
from agents.runtime.contract import (
    HEADER_SESSION_ID,
    HEADER_USER_ID,
    USER_ID_MAX,
    ContractError,
    Event,
    InvocationRequest,
    RequestRefused,
    TenantContext,
    bearer_token,
    validate_session_id,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedInvocation:
    request: InvocationRequest
    caller: Caller
    session_id: str
    user_id: str


class RuntimeHost:
    def __init__(
        self, verifier: TokenVerifier, agent: ReferenceAgent | None = None, *, clock: Callable[[], float] = time.time
    ):
        self.verifier = verifier
        self.agent = agent or ReferenceAgent()
        self._clock = clock
        self._lock = threading.Lock()
        self._active = 0
        self._changed_at = int(clock())

    def prepare(self, headers: Mapping[str, str], body: bytes | str | Mapping[str, Any]) -> PreparedInvocation:
        """Verify and parse one invocation. Raises RequestRefused (400/401/403/503); runs nothing."""
        token = bearer_token(headers)
        claims = self.verifier.decode(token)
        try:
            tenant = TenantContext.from_headers(headers)
        except ContractError as exc:
            raise RequestRefused(400, "bad_request", str(exc))
        caller = dataclasses.replace(self.verifier.authorize(claims, tenant), token=token or "")
        lowered = {str(k).lower(): v for k, v in headers.items()}
        try:
            session_id = validate_session_id(lowered.get(HEADER_SESSION_ID.lower(), ""))
            user_id = lowered.get(HEADER_USER_ID.lower(), "")
            if not 1 <= len(user_id) <= USER_ID_MAX:
                raise ContractError(f"{HEADER_USER_ID} must be 1–{USER_ID_MAX} characters long")
            if isinstance(body, Mapping):
                request = InvocationRequest.from_dict(body)
            else:
                request = InvocationRequest.from_json(body)
        except ContractError as exc:
            raise RequestRefused(400, "bad_request", str(exc))
        return PreparedInvocation(request=request, caller=caller, session_id=session_id, user_id=user_id)

    def run(self, prepared: PreparedInvocation) -> Iterator[Event]:
        """The agent's events; counts as busy from the first event until the stream is finished or closed."""
        self._enter()
        try:
            logger.info(
                "invocation %s tenant=%s actor=%s session=%s",
                prepared.request.invocation_id,
                prepared.caller.tenant.tenant_id,
                prepared.caller.actor,
                prepared.session_id,
            )
            yield from self.agent.run(prepared.request, prepared.caller)
        finally:
            self._leave()

    def _enter(self) -> None:
        with self._lock:
            self._active += 1
            if self._active == 1:
                self._changed_at = int(self._clock())

    def _leave(self) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0:
                self._changed_at = int(self._clock())

    @property
    def active(self) -> int:
        return self._active

    def ping(self) -> dict[str, Any]:
        with self._lock:
            return {"status": "HealthyBusy" if self._active else "Healthy", "time_of_last_update": self._changed_at}

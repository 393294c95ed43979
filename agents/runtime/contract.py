"""The runtime contract: what the portal sends to an agent runtime and what comes back.

One module owns the wire format so that the three clients (local, http,
agentcore), the runtime server and the reference agent cannot drift apart: each
of them builds and parses requests, headers and events through these types only.

The contract is Amazon Bedrock AgentCore Runtime's HTTP contract as this portal
uses it:

* ``POST /invocations`` with an :class:`InvocationRequest` as JSON. The tenant is
  *not* in the body: it travels in the ``X-Amzn-Bedrock-AgentCore-Runtime-Custom-*``
  headers (:class:`TenantContext`) next to an act-on-behalf bearer token, because
  AgentCore forwards exactly those headers to the runtime container and nothing
  else, and because a runtime must be able to check the tenant against the token
  before it reads a byte of the payload.
* The answer is a JSON document (:class:`InvocationResult`) or, when the request
  asks to stream, ``text/event-stream`` with one JSON event per ``data:`` line
  (:class:`Delta`, :class:`ToolCall`, :class:`Citation`, :class:`Usage`,
  :class:`Error`, :class:`Done`). Both shapes convert into the same event list, so
  a caller never cares which one a runtime chose.
* ``GET /ping`` answers ``Healthy`` or ``HealthyBusy``.

Extensions beyond the minimal contract, all optional and ignored by a runtime
that does not know them: ``tools`` in the request (tool specs offered to the
model), ``skills`` in the request (procedures the agent follows: name, when to use
it, markdown instructions; absent means none), ``id`` on tool calls, ``index`` on citations (the ``[n]`` used in the
text) and ``retryable`` on errors (so a caller can decide to retry a failed
turn without knowing every provider's error codes).

Nothing here imports Django: the runtime server runs as a standalone process.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

# --- headers -----------------------------------------------------------------------

CUSTOM_HEADER_PREFIX = "X-Amzn-Bedrock-AgentCore-Runtime-Custom-"
HEADER_TENANT_ID = CUSTOM_HEADER_PREFIX + "Tenant-Id"
HEADER_TIER = CUSTOM_HEADER_PREFIX + "Tier"
HEADER_REGION = CUSTOM_HEADER_PREFIX + "Region"
HEADER_DEPLOYMENT_MODEL = CUSTOM_HEADER_PREFIX + "Deployment-Model"
HEADER_ENTITLEMENTS = CUSTOM_HEADER_PREFIX + "Entitlements"
HEADER_FEATURE_FLAGS = CUSTOM_HEADER_PREFIX + "Feature-Flags"
# AgentCore with IAM (SigV4) inbound auth owns the Authorization header: the
# signature replaces whatever we put there. The act-on-behalf token then travels
# in this custom header, which AgentCore forwards like the other custom ones.
HEADER_FORWARDED_AUTHORIZATION = CUSTOM_HEADER_PREFIX + "Authorization"
HEADER_SESSION_ID = "X-Amzn-Bedrock-AgentCore-Runtime-Session-Id"
HEADER_USER_ID = "X-Amzn-Bedrock-AgentCore-Runtime-User-Id"
HEADER_AUTHORIZATION = "Authorization"

SESSION_ID_MIN = 33
SESSION_ID_MAX = 256
USER_ID_MAX = 1024
# AgentCore refuses custom header values above 4 KB.
HEADER_VALUE_MAX = 4096

PROVIDERS = ("offline", "bedrock", "openai")
DEPLOYMENT_MODELS = ("pool", "bridge", "silo")

# Bounds that keep one request from exhausting a runtime; generous for real chats.
MAX_PROMPT_CHARS = 100_000
MAX_MESSAGES = 500
MAX_MESSAGE_CHARS = 100_000
MAX_PASSAGES = 100
MAX_PASSAGE_CHARS = 50_000
MAX_TOOLS = 64
MAX_SKILLS = 32
MAX_SKILL_INSTRUCTIONS_CHARS = 20_000  # a bridged skill is a shared skill's steps plus a tenant's
MAX_OUTPUT_TOKENS = 200_000


class ContractError(ValueError):
    """A request, header set or event does not follow the contract (a 400, not a crash)."""


class RequestRefused(Exception):
    """A runtime refuses an invocation before running anything.

    ``status`` and ``code`` become the HTTP status and the JSON error body
    (``{"error": {"code": ..., "message": ...}}``); ``reason`` is a short slug
    for logs and tests and may say more than the caller should see.
    """

    def __init__(self, status: int, code: str, message: str, *, reason: str = ""):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.reason = reason or code

    def to_document(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


# --- small validators ----------------------------------------------------------------


def _str(data: Mapping[str, Any], key: str, where: str, *, default: str | None = None, max_len: int = 1000) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise ContractError(f"{where}.{key} must be a string")
    if len(value) > max_len:
        raise ContractError(f"{where}.{key} is longer than {max_len} characters")
    return value


def _list(data: Mapping[str, Any], key: str, where: str, *, max_items: int) -> list:
    value = data.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list):
        raise ContractError(f"{where}.{key} must be a list")
    if len(value) > max_items:
        raise ContractError(f"{where}.{key} has more than {max_items} items")
    return value


def _object(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ContractError(f"{where} must be an object")
    return value


def _header_safe(value: str, name: str) -> str:
    # A header value with CR/LF would let a value inject headers; non-ASCII is not portable.
    if not value.isascii() or any(ch in value for ch in "\r\n\0"):
        raise ContractError(f"{name} must be printable ASCII")
    if len(value) > HEADER_VALUE_MAX:
        raise ContractError(f"{name} is longer than {HEADER_VALUE_MAX} characters")
    return value


# --- runtime session ids ---------------------------------------------------------------

_SESSION_ID_RE = re.compile(r"[\x21-\x7e]+")  # visible ASCII: header-safe, no spaces
_ID_PART_RE = re.compile(r"[A-Za-z0-9_-]+")
_DERIVED_SESSION_MAX = 100  # AgentCore echoes the id back in a field capped at 100


def validate_session_id(value: Any) -> str:
    """Return `value` if it is a valid runtime session id (33–256 visible ASCII characters)."""
    if not isinstance(value, str):
        raise ContractError("runtime session id must be a string")
    if not SESSION_ID_MIN <= len(value) <= SESSION_ID_MAX:
        raise ContractError(f"runtime session id must be {SESSION_ID_MIN}–{SESSION_ID_MAX} characters long")
    if not _SESSION_ID_RE.fullmatch(value):
        raise ContractError("runtime session id must be visible ASCII without spaces")
    return value


def session_id_for_conversation(conversation_id: object, *, prefix: str = "conv") -> str:
    """A stable runtime session id for a conversation: same id in, same session out.

    ``<prefix>-<id>-<32 hex of sha256>``: the id keeps it readable in AgentCore's
    logs, the digest makes it long enough (AgentCore wants at least 33
    characters) and unique even when the id part had to be shortened. Ids with
    characters outside ``[A-Za-z0-9_-]`` are represented by the digest only.
    """
    raw = str(conversation_id)
    if not raw or not re.fullmatch(r"[A-Za-z0-9_-]{1,32}", prefix):
        raise ContractError("the conversation id must not be empty; the prefix must be 1–32 of [A-Za-z0-9_-]")
    digest = hashlib.sha256(f"{prefix}:{raw}".encode()).hexdigest()[:32]
    readable = raw if _ID_PART_RE.fullmatch(raw) else ""
    readable = readable[: _DERIVED_SESSION_MAX - len(prefix) - len(digest) - 2]
    # Shortest case: a 1-character prefix, "-" and the digest = 34 characters.
    return validate_session_id(f"{prefix}-{readable}-{digest}" if readable else f"{prefix}-{digest}")


# --- tenant context (headers) -------------------------------------------------------------


def _split_list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _join_list(items: Iterable[str], name: str) -> str:
    items = [str(item).strip() for item in items]
    if any("," in item for item in items):
        raise ContractError(f"{name} items must not contain commas")
    return ",".join(item for item in items if item)


class _CaseInsensitive:
    """Header lookup that ignores case, as HTTP does."""

    def __init__(self, headers: Mapping[str, str]):
        self._headers = {str(k).lower(): v for k, v in headers.items()}

    def get(self, name: str, default: str = "") -> str:
        return self._headers.get(name.lower(), default)


@dataclass(frozen=True)
class TenantContext:
    """Who the invocation is for, as the portal's custom headers say.

    The runtime trusts none of it until the bearer token's ``tenant_id`` claim
    has been checked against ``tenant_id`` (see ``agents.runtime.auth``).
    """

    tenant_id: str
    tier: str = ""
    region: str = ""
    deployment_model: str = "pool"
    entitlements: tuple[str, ...] = ()
    feature_flags: tuple[str, ...] = ()

    def __post_init__(self):
        if not isinstance(self.tenant_id, str) or not self.tenant_id.strip():
            raise ContractError(f"{HEADER_TENANT_ID} is required")
        if self.deployment_model and self.deployment_model not in DEPLOYMENT_MODELS:
            raise ContractError(f"{HEADER_DEPLOYMENT_MODEL} must be one of {', '.join(DEPLOYMENT_MODELS)}")
        object.__setattr__(self, "entitlements", tuple(self.entitlements))
        object.__setattr__(self, "feature_flags", tuple(self.feature_flags))

    def to_headers(self) -> dict[str, str]:
        headers = {
            HEADER_TENANT_ID: self.tenant_id,
            HEADER_TIER: self.tier,
            HEADER_REGION: self.region,
            HEADER_DEPLOYMENT_MODEL: self.deployment_model,
            HEADER_ENTITLEMENTS: _join_list(self.entitlements, HEADER_ENTITLEMENTS),
            HEADER_FEATURE_FLAGS: _join_list(self.feature_flags, HEADER_FEATURE_FLAGS),
        }
        return {name: _header_safe(value, name) for name, value in headers.items() if value}

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> TenantContext:
        h = _CaseInsensitive(headers)
        return cls(
            tenant_id=h.get(HEADER_TENANT_ID).strip(),
            tier=h.get(HEADER_TIER).strip(),
            region=h.get(HEADER_REGION).strip(),
            deployment_model=h.get(HEADER_DEPLOYMENT_MODEL, "pool").strip() or "pool",
            entitlements=_split_list(h.get(HEADER_ENTITLEMENTS)),
            feature_flags=_split_list(h.get(HEADER_FEATURE_FLAGS)),
        )


@dataclass(frozen=True)
class InvocationContext:
    """Everything about one call that is not the payload: it becomes headers.

    ``access_token`` is the act-on-behalf token (``act.sub`` names the agent);
    ``session_id`` is the conversation's runtime session id; ``user_id`` the
    AgentCore runtime user id (the portal's user reference, not an email).
    """

    tenant: TenantContext
    access_token: str
    session_id: str
    user_id: str

    def __post_init__(self):
        validate_session_id(self.session_id)
        if not isinstance(self.user_id, str) or not 1 <= len(self.user_id) <= USER_ID_MAX:
            raise ContractError(f"runtime user id must be 1–{USER_ID_MAX} characters long")
        _header_safe(self.user_id, HEADER_USER_ID)
        if not isinstance(self.access_token, str) or not self.access_token:
            raise ContractError("an access token is required")
        _header_safe(self.access_token, HEADER_AUTHORIZATION)

    def tenant_headers(self) -> dict[str, str]:
        """The custom tenant headers only (what the AgentCore hook adds to the signed request)."""
        return self.tenant.to_headers()

    def to_headers(self) -> dict[str, str]:
        """All headers for a plain HTTP runtime."""
        return {
            **self.tenant_headers(),
            HEADER_SESSION_ID: self.session_id,
            HEADER_USER_ID: self.user_id,
            HEADER_AUTHORIZATION: f"Bearer {self.access_token}",
        }

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> InvocationContext:
        """The inverse of :meth:`to_headers` (for callers that already hold a header dict)."""
        h = _CaseInsensitive(headers)
        return cls(
            tenant=TenantContext.from_headers(headers),
            access_token=bearer_token(headers) or "",
            session_id=h.get(HEADER_SESSION_ID),
            user_id=h.get(HEADER_USER_ID),
        )


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The bearer token from ``Authorization``, else from the forwarded custom header."""
    h = _CaseInsensitive(headers)
    for name in (HEADER_AUTHORIZATION, HEADER_FORWARDED_AUTHORIZATION):
        scheme, _, token = h.get(name).strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    return None


# --- the request -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "user" | "assistant"
    content: str

    def to_dict(self) -> dict:
        return {"role": self.role, "content": self.content}

    @classmethod
    def from_dict(cls, data: Any, where: str = "messages[]") -> ChatMessage:
        data = _object(data, where)
        role = _str(data, "role", where, max_len=20)
        if role not in ("user", "assistant"):
            raise ContractError(f"{where}.role must be 'user' or 'assistant'")
        return cls(role=role, content=_str(data, "content", where, max_len=MAX_MESSAGE_CHARS))


@dataclass(frozen=True)
class AgentSpec:
    id: str
    name: str
    instructions: str = ""

    def to_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "instructions": self.instructions}

    @classmethod
    def from_dict(cls, data: Any) -> AgentSpec:
        data = _object(data, "agent")
        return cls(
            id=_str(data, "id", "agent", max_len=200),
            name=_str(data, "name", "agent", default="", max_len=200),
            instructions=_str(data, "instructions", "agent", default="", max_len=MAX_PROMPT_CHARS),
        )


@dataclass(frozen=True)
class ModelSpec:
    """Which model answers. An empty provider means "the runtime's default" (``MODEL_PROVIDER``)."""

    provider: str = ""
    model_id: str = ""
    max_tokens: int = 1024
    temperature: float = 0.2

    def to_dict(self) -> dict:
        return {
            "provider": self.provider,
            "model_id": self.model_id,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }

    @classmethod
    def from_dict(cls, data: Any) -> ModelSpec:
        data = _object(data if data is not None else {}, "model")
        provider = _str(data, "provider", "model", default="", max_len=20)
        if provider and provider not in PROVIDERS:
            raise ContractError(f"model.provider must be one of {', '.join(PROVIDERS)}")
        max_tokens = data.get("max_tokens", 1024)
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or not 1 <= max_tokens <= MAX_OUTPUT_TOKENS:
            raise ContractError(f"model.max_tokens must be an integer between 1 and {MAX_OUTPUT_TOKENS}")
        temperature = data.get("temperature", 0.2)
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not math.isfinite(temperature)
            or not 0 <= temperature <= 2
        ):
            raise ContractError("model.temperature must be a number between 0 and 2")
        return cls(
            provider=provider,
            model_id=_str(data, "model_id", "model", default="", max_len=2048),
            max_tokens=max_tokens,
            temperature=float(temperature),
        )


@dataclass(frozen=True)
class Passage:
    """A piece of retrieved knowledge the answer may quote and cite."""

    id: str
    title: str
    text: str
    source: str = ""

    def to_dict(self) -> dict:
        return {"id": self.id, "title": self.title, "text": self.text, "source": self.source}

    @classmethod
    def from_dict(cls, data: Any) -> Passage:
        where = "context.passages[]"
        data = _object(data, where)
        return cls(
            id=_str(data, "id", where, max_len=200),
            title=_str(data, "title", where, default="", max_len=500),
            text=_str(data, "text", where, max_len=MAX_PASSAGE_CHARS),
            source=_str(data, "source", where, default="", max_len=2048),
        )


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call (extension). The runtime reports calls; it does not run them here."""

    name: str
    description: str = ""
    input_schema: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "input_schema": dict(self.input_schema)}

    @classmethod
    def from_dict(cls, data: Any) -> ToolSpec:
        data = _object(data, "tools[]")
        name = _str(data, "name", "tools[]", max_len=64)
        if not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name):
            raise ContractError("tools[].name must be 1–64 characters of [a-zA-Z0-9_-]")
        schema = data.get("input_schema", {"type": "object", "properties": {}})
        return cls(
            name=name,
            description=_str(data, "description", "tools[]", default="", max_len=4000),
            input_schema=dict(_object(schema, "tools[].input_schema")),
        )


@dataclass(frozen=True)
class SkillSpec:
    """A skill the agent follows (extension): its name, when to use it, and its steps (markdown)."""

    name: str
    description: str = ""
    instructions: str = ""

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "instructions": self.instructions}

    @classmethod
    def from_dict(cls, data: Any) -> SkillSpec:
        data = _object(data, "skills[]")
        name = _str(data, "name", "skills[]", max_len=100)
        if not name.strip():
            raise ContractError("skills[].name must not be empty")
        return cls(
            name=name,
            description=_str(data, "description", "skills[]", default="", max_len=1000),
            instructions=_str(data, "instructions", "skills[]", max_len=MAX_SKILL_INSTRUCTIONS_CHARS),
        )


@dataclass(frozen=True)
class InvocationRequest:
    """The body of ``POST /invocations``."""

    invocation_id: str
    prompt: str
    agent: AgentSpec
    model: ModelSpec = field(default_factory=ModelSpec)
    messages: tuple[ChatMessage, ...] = ()  # history, oldest first, without the prompt
    passages: tuple[Passage, ...] = ()
    tools: tuple[ToolSpec, ...] = ()
    skills: tuple[SkillSpec, ...] = ()
    stream: bool = True

    def to_dict(self) -> dict:
        body = {
            "invocation_id": self.invocation_id,
            "prompt": self.prompt,
            "messages": [m.to_dict() for m in self.messages],
            "agent": self.agent.to_dict(),
            "model": self.model.to_dict(),
            "context": {"passages": [p.to_dict() for p in self.passages]},
            "stream": self.stream,
        }
        if self.tools:
            body["tools"] = [t.to_dict() for t in self.tools]
        if self.skills:
            body["skills"] = [s.to_dict() for s in self.skills]
        return body

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, data: Any) -> InvocationRequest:
        data = _object(data, "request")
        invocation_id = _str(data, "invocation_id", "request", max_len=200)
        if not invocation_id:
            raise ContractError("request.invocation_id must not be empty")
        prompt = _str(data, "prompt", "request", max_len=MAX_PROMPT_CHARS)
        if not prompt.strip():
            raise ContractError("request.prompt must not be empty")
        stream = data.get("stream", False)
        if not isinstance(stream, bool):
            raise ContractError("request.stream must be true or false")
        context = _object(data.get("context") or {}, "context")
        return cls(
            invocation_id=invocation_id,
            prompt=prompt,
            agent=AgentSpec.from_dict(data.get("agent")),
            model=ModelSpec.from_dict(data.get("model")),
            messages=tuple(
                ChatMessage.from_dict(m, f"messages[{i}]")
                for i, m in enumerate(_list(data, "messages", "request", max_items=MAX_MESSAGES))
            ),
            passages=tuple(Passage.from_dict(p) for p in _list(context, "passages", "context", max_items=MAX_PASSAGES)),
            tools=tuple(ToolSpec.from_dict(t) for t in _list(data, "tools", "request", max_items=MAX_TOOLS)),
            skills=tuple(SkillSpec.from_dict(s) for s in _list(data, "skills", "request", max_items=MAX_SKILLS)),
            stream=stream,
        )

    @classmethod
    def from_json(cls, body: bytes | str) -> InvocationRequest:
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ContractError(f"the body is not JSON: {exc}")
        return cls.from_dict(data)


# --- events ----------------------------------------------------------------------------------

# Error codes a runtime may send, and whether retrying the same turn may succeed.
ERROR_CODES: dict[str, bool] = {
    "model_throttled": True,
    "model_unavailable": True,
    "model_timeout": True,
    "model_error": False,
    "model_not_configured": False,
    "bad_request": False,
    "internal_error": False,
}


@dataclass(frozen=True)
class Delta:
    type: ClassVar[str] = "delta"
    text: str

    def to_dict(self) -> dict:
        return {"type": self.type, "text": self.text}


@dataclass(frozen=True)
class ToolCall:
    """A call the model made. When the runtime ran it (through the portal's tools gateway),
    ``result`` is what the tool answered, or ``error`` why it did not (both optional
    extensions: a runtime that only reports calls sends neither)."""

    type: ClassVar[str] = "tool_call"
    name: str
    input: Mapping[str, Any]
    id: str = ""
    result: Any = None
    error: str = ""

    def to_dict(self) -> dict:
        data = {"type": self.type, "name": self.name, "input": dict(self.input)}
        if self.id:
            data["id"] = self.id
        if self.result is not None:
            data["result"] = self.result
        if self.error:
            data["error"] = self.error
        return data


@dataclass(frozen=True)
class Citation:
    type: ClassVar[str] = "citation"
    passage_id: str
    title: str = ""
    source: str = ""
    index: int | None = None  # the n of "[n]" in the answer text

    def to_dict(self) -> dict:
        data = {"type": self.type, "passage_id": self.passage_id, "title": self.title, "source": self.source}
        if self.index is not None:
            data["index"] = self.index
        return data


@dataclass(frozen=True)
class Usage:
    type: ClassVar[str] = "usage"
    input_tokens: int
    output_tokens: int
    estimated: bool = False
    model: str = ""

    def to_dict(self) -> dict:
        return {
            "type": self.type,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "estimated": self.estimated,
            "model": self.model,
        }


@dataclass(frozen=True)
class Error:
    type: ClassVar[str] = "error"
    code: str
    message: str
    retryable: bool | None = None  # None: derive from ERROR_CODES

    def __post_init__(self):
        if self.retryable is None:
            object.__setattr__(self, "retryable", ERROR_CODES.get(self.code, False))

    def to_dict(self) -> dict:
        return {"type": self.type, "code": self.code, "message": self.message, "retryable": self.retryable}


@dataclass(frozen=True)
class Done:
    type: ClassVar[str] = "done"

    def to_dict(self) -> dict:
        return {"type": self.type}


Event = Delta | ToolCall | Citation | Usage | Error | Done


def _int(data: Mapping[str, Any], key: str) -> int:
    value = data.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ContractError(f"event {key} must be a non-negative integer")
    return value


def event_from_dict(data: Any) -> Event | None:
    """Parse one event. Unknown types give None (a newer runtime may send more kinds)."""
    data = _object(data, "event")
    kind = data.get("type")
    if kind == "delta":
        return Delta(text=_str(data, "text", "delta", max_len=10_000_000))
    if kind == "tool_call":
        tool_input = data.get("input") or {}
        return ToolCall(
            name=_str(data, "name", "tool_call", max_len=200),
            input=dict(_object(tool_input, "tool_call.input")),
            id=_str(data, "id", "tool_call", default="", max_len=200),
            result=data.get("result"),
            error=_str(data, "error", "tool_call", default="", max_len=2000),
        )
    if kind == "citation":
        index = data.get("index")
        if index is not None and (isinstance(index, bool) or not isinstance(index, int)):
            raise ContractError("citation.index must be an integer")
        return Citation(
            passage_id=_str(data, "passage_id", "citation", max_len=200),
            title=_str(data, "title", "citation", default="", max_len=500),
            source=_str(data, "source", "citation", default="", max_len=2048),
            index=index,
        )
    if kind == "usage":
        return Usage(
            input_tokens=_int(data, "input_tokens"),
            output_tokens=_int(data, "output_tokens"),
            estimated=bool(data.get("estimated", False)),
            model=_str(data, "model", "usage", default="", max_len=2048),
        )
    if kind == "error":
        retryable = data.get("retryable")
        return Error(
            code=_str(data, "code", "error", default="internal_error", max_len=100),
            message=_str(data, "message", "error", default="", max_len=10_000),
            retryable=retryable if isinstance(retryable, bool) else None,
        )
    if kind == "done":
        return Done()
    if not isinstance(kind, str):
        raise ContractError("event.type must be a string")
    return None


# --- server-sent events ----------------------------------------------------------------------

SSE_CONTENT_TYPE = "text/event-stream"
JSON_CONTENT_TYPE = "application/json"
MAX_SSE_LINE = 4 * 1024 * 1024


def encode_sse(event: Event) -> bytes:
    """One event as an SSE frame. JSON never contains a raw newline, so one data line suffices."""
    return b"data: " + json.dumps(event.to_dict(), ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def iter_sse_data(lines: Iterable[bytes | str]) -> Iterator[str]:
    """The data of each SSE message in `lines` (per the WHATWG rules: multi-line data
    joined with newlines, comments and other fields ignored, blank line dispatches)."""
    data: list[str] = []
    for raw in lines:
        line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        line = line.rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def iter_sse_events(lines: Iterable[bytes | str]) -> Iterator[Event]:
    """Contract events from SSE lines; unknown event types are skipped, bad JSON raises."""
    for data in iter_sse_data(lines):
        if data.strip() == "[DONE]":  # an OpenAI-style terminator is tolerated, not required
            return
        try:
            parsed = json.loads(data)
        except ValueError as exc:
            raise ContractError(f"an event is not JSON: {exc}")
        event = event_from_dict(parsed)
        if event is not None:
            yield event


# --- the non-streaming document --------------------------------------------------------------


@dataclass
class InvocationResult:
    """A whole answer: what the JSON response carries and what a stream adds up to."""

    output: str = ""
    citations: list[dict] = field(default_factory=list)
    tool_calls: list[dict] = field(default_factory=list)
    usage: dict | None = None
    model: str = ""
    error: dict | None = None

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> InvocationResult:
        result = cls()
        parts: list[str] = []
        for event in events:
            if isinstance(event, Delta):
                parts.append(event.text)
            elif isinstance(event, Citation):
                result.citations.append({k: v for k, v in event.to_dict().items() if k != "type"})
            elif isinstance(event, ToolCall):
                result.tool_calls.append({k: v for k, v in event.to_dict().items() if k != "type"})
            elif isinstance(event, Usage):
                result.usage = {k: v for k, v in event.to_dict().items() if k not in ("type", "model")}
                result.model = event.model
            elif isinstance(event, Error):
                result.error = {k: v for k, v in event.to_dict().items() if k != "type"}
        result.output = "".join(parts)
        return result

    def to_document(self) -> dict:
        doc = {
            "output": self.output,
            "citations": self.citations,
            "tool_calls": self.tool_calls,
            "usage": self.usage or {"input_tokens": 0, "output_tokens": 0, "estimated": True},
            "model": self.model,
        }
        if self.error:
            doc["error"] = self.error
        return doc

    @classmethod
    def from_document(cls, doc: Any) -> InvocationResult:
        doc = _object(doc, "response")
        usage = doc.get("usage")
        error = doc.get("error")
        return cls(
            output=_str(doc, "output", "response", default="", max_len=10_000_000),
            citations=[dict(_object(c, "citations[]")) for c in _list(doc, "citations", "response", max_items=1000)],
            tool_calls=[dict(_object(t, "tool_calls[]")) for t in _list(doc, "tool_calls", "response", max_items=1000)],
            usage=dict(_object(usage, "response.usage")) if usage is not None else None,
            model=_str(doc, "model", "response", default="", max_len=2048),
            error=dict(_object(error, "response.error")) if error is not None else None,
        )

    def to_events(self) -> list[Event]:
        """The same answer as the event sequence a stream would have carried."""
        events: list[Event] = []
        if self.output:
            events.append(Delta(text=self.output))
        for call in self.tool_calls:
            events.append(event_from_dict({"type": "tool_call", **call}))  # type: ignore[arg-type]
        for citation in self.citations:
            events.append(event_from_dict({"type": "citation", **citation}))  # type: ignore[arg-type]
        if self.error:
            events.append(event_from_dict({"type": "error", **self.error}))  # type: ignore[arg-type]
        elif self.usage is not None:
            events.append(event_from_dict({"type": "usage", **self.usage, "model": self.model}))  # type: ignore[arg-type]
        events.append(Done())
        return events

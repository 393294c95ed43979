"""What every model provider shares: its input, its errors, and token estimates.

A provider turns a :class:`ModelInput` into contract events (``Delta``,
``ToolCall``, ``Citation``, ``Usage``); the reference agent adds citations,
fills in a missing usage and frames the stream (``error``, ``done``). Providers
raise :class:`ModelError` with a contract error code, so the portal learns
"throttled, retry later" the same way whichever vendor said it.

Token estimates
---------------
When a provider does not report usage (the offline model never does, an
OpenAI-compatible server may not), tokens are *estimated* and the usage event
says ``estimated: true`` so billing can tell measured from guessed numbers.
The method is ``ceil(characters / 4)`` per text, plus
:data:`MESSAGE_OVERHEAD_TOKENS` per chat message for the role markers: about
four characters per token is the usual rule of thumb for English with
BPE tokenizers (GPT, Claude, Llama). It is cheap, deterministic and
language-model independent; it is not exact, and is not meant to be.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from agents.runtime.contract import (
    ChatMessage,
    Citation,
    Delta,
    ModelSpec,
    Passage,
    SkillSpec,
    ToolCall,
    ToolSpec,
    Usage,
)

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4

ModelEvent = Delta | ToolCall | Citation | Usage


class ModelError(Exception):
    """A provider failed; ``code`` is one of ``contract.ERROR_CODES``."""

    code = "model_error"
    retryable = False

    def __init__(self, message: str, *, code: str | None = None, retryable: bool | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable


class ModelThrottled(ModelError):
    code = "model_throttled"
    retryable = True


class ModelUnavailable(ModelError):
    code = "model_unavailable"
    retryable = True


class ModelTimeout(ModelError):
    code = "model_timeout"
    retryable = True


class ModelNotConfigured(ModelError):
    code = "model_not_configured"
    retryable = False


@dataclass(frozen=True)
class ToolRound:
    """One round of tools in a turn: what the model said and the calls it asked for, in order,
    each with the portal's result (or error). Providers send each round back as its own
    assistant message and answer(s), because Bedrock pairs every toolResult with the assistant
    message just before it and OpenAI every tool message with the previous assistant message."""

    calls: tuple[ToolCall, ...]
    text: str = ""


@dataclass(frozen=True)
class ModelInput:
    """One model call, already shaped for chat APIs.

    ``messages`` alternate user/assistant, start with a user turn and end with
    the prompt (Bedrock's Converse insists on that; OpenAI does not mind).
    ``history`` and ``prompt`` are kept apart for the offline model, which reads
    them rather than generating from them. ``metadata`` is string-valued
    request metadata (tenant id, tier, invocation id) for providers that
    attribute cost by it. ``features`` are the tenant's entitlements and
    feature flags as the runtime headers carry them, so that a provider's own
    wording (the offline model's advice) never promises what the plan lacks.
    """

    system: str
    messages: tuple[ChatMessage, ...]
    prompt: str
    spec: ModelSpec
    instructions: str = ""
    agent_name: str = ""
    history: tuple[ChatMessage, ...] = ()
    passages: tuple[Passage, ...] = ()
    tools: tuple[ToolSpec, ...] = ()
    # The earlier tool rounds of this turn, in order: what the model answers from next.
    tool_rounds: tuple[ToolRound, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    features: frozenset[str] = frozenset()
    # What the member asked agents to remember, recalled for this prompt (agents/runtime/memory.py):
    # context about the person, not sources to cite.
    memories: tuple[str, ...] = ()
    # The skills the agent follows in this tenant (already in ``system``; kept apart for the
    # offline model, which names the one that matches rather than reading the prompt).
    skills: tuple[SkillSpec, ...] = ()

    @property
    def tool_results(self) -> tuple[ToolCall, ...]:
        """Every tool call of the earlier rounds, in order (for a provider that reads, not replays, them)."""
        return tuple(call for tool_round in self.tool_rounds for call in tool_round.calls)


class ModelProvider(Protocol):
    name: str
    # True when the provider emits Citation events itself; otherwise the agent
    # derives them from the [n] markers in the text.
    cites_passages: bool

    def generate(self, model_input: ModelInput, *, stream: bool) -> Iterator[ModelEvent]:
        """Events for one answer. Raises ModelError. `stream=False` may use a non-streaming API."""


def estimate_tokens(text: str) -> int:
    """ceil(len(text) / 4): see the module docstring."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def estimate_input_tokens(model_input: ModelInput) -> int:
    tokens = estimate_tokens(model_input.system) + MESSAGE_OVERHEAD_TOKENS
    for message in model_input.messages:
        tokens += estimate_tokens(message.content) + MESSAGE_OVERHEAD_TOKENS
    return tokens


def normalise_turns(history: tuple[ChatMessage, ...], prompt: str) -> tuple[ChatMessage, ...]:
    """History + prompt as alternating turns that start with the user and end with the prompt."""
    turns: list[ChatMessage] = []
    for message in (*history, ChatMessage(role="user", content=prompt)):
        if not message.content.strip():
            continue
        if not turns and message.role != "user":
            continue  # a conversation seen from the model starts with the user
        if turns and turns[-1].role == message.role:
            turns[-1] = ChatMessage(role=message.role, content=f"{turns[-1].content}\n\n{message.content}")
        else:
            turns.append(message)
    return tuple(turns)


def render_system_prompt(instructions: str, passages: tuple[Passage, ...], memories: tuple[str, ...] = ()) -> str:
    """The agent's instructions, what it remembers about the member, then the numbered
    sources the answer may cite as [n]."""
    parts = [instructions.strip()] if instructions.strip() else []
    if memories:
        parts.append(
            "Long-term memory: facts this user asked you to remember in earlier conversations. "
            "Use them as context about the user; they are not sources and must not be cited.\n"
            + "\n".join(f"- {memory.strip()}" for memory in memories)
        )
    if passages:
        parts.append(
            "Answer from the numbered sources below when they are relevant and cite them as [n] "
            "right after the sentence that uses them. If they do not contain the answer, say so."
        )
        for n, passage in enumerate(passages, start=1):
            source = f" ({passage.source})" if passage.source else ""
            parts.append(f"[{n}] {passage.title}{source}\n{passage.text.strip()}")
    return "\n\n".join(parts)


_MARKER_RE = re.compile(r"\[(\d{1,3})\]")


def citations_from_markers(text: str, passages: tuple[Passage, ...]) -> list[Citation]:
    """One citation per distinct [n] in `text` that names a passage, in order of first use."""
    seen: list[int] = []
    for match in _MARKER_RE.finditer(text):
        n = int(match.group(1))
        if 1 <= n <= len(passages) and n not in seen:
            seen.append(n)
    return [
        Citation(passage_id=passages[n - 1].id, title=passages[n - 1].title, source=passages[n - 1].source, index=n)
        for n in seen
    ]


def tool_result_document(call: ToolCall) -> dict:
    """A tool call's outcome as a JSON object for a model: the result (an object as is,
    anything else as {"value": ...}) or {"error": ...}."""
    if call.error:
        return {"error": call.error}
    return call.result if isinstance(call.result, dict) else {"value": call.result}

"""Any OpenAI-compatible Chat Completions endpoint (OpenAI, vLLM, Ollama, LiteLLM …).

Only the standard library: the wire protocol is one POST and a stream of SSE
lines, and the ``openai`` package would add a dependency tree (httpx, pydantic)
to a runtime image for no behaviour we need. ``urllib`` honours the usual
proxy variables, which matters for endpoints behind a corporate egress proxy.

The request always streams (``stream: true`` with ``stream_options.include_usage``),
also for a non-streaming invocation: the answer is the same and the runtime
collects it. What is read from the chunks:

* ``choices[0].delta.content`` → ``Delta``;
* ``choices[0].delta.tool_calls[]`` arrive in pieces keyed by ``index`` (the id
  and name first, the JSON arguments in fragments) → one ``ToolCall`` each,
  once the stream ends;
* after tool rounds, each round goes back, in order, as an assistant message
  with its text and ``tool_calls`` (id, function name, JSON arguments) and one
  ``role: "tool"`` message per call with its result (or error) as JSON;
* the final chunk's ``usage`` (``prompt_tokens``/``completion_tokens``) →
  ``Usage``. A server that ignores ``include_usage`` sends none; the reference
  agent then estimates usage and flags it.

Configuration: ``OPENAI_BASE_URL`` (default ``https://api.openai.com/v1``, for a
local server e.g. ``http://localhost:11434/v1``), ``OPENAI_API_KEY`` (optional:
local servers often need none), ``OPENAI_TIMEOUT_SECONDS`` (default 60: the
longest wait for the next byte, not for the whole answer).
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from agents.runtime.contract import Delta, ToolCall, Usage, iter_sse_data
from agents.runtime.models.base import (
    ModelError,
    ModelEvent,
    ModelInput,
    ModelNotConfigured,
    ModelThrottled,
    ModelTimeout,
    ModelUnavailable,
    ToolRound,
    tool_result_document,
)

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
MAX_LINE_BYTES = 1024 * 1024


def _error_message(body: bytes) -> str:
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return body[:200].decode("utf-8", "replace")
    if isinstance(error, Mapping):
        return str(error.get("message", ""))[:500]
    return str(error)[:500]


def tool_messages(rounds: Iterable[ToolRound]) -> list[dict]:
    """The tool rounds so far as Chat Completions messages after the prompt: per round, the
    assistant message with its text and ``tool_calls``, then one ``tool`` message per call.
    Servers check that each tool message answers a call of the assistant message before it."""
    messages: list[dict] = []
    for tool_round in rounds:
        calls = tool_round.calls
        messages.append(
            {
                "role": "assistant",
                "content": tool_round.text or None,
                "tool_calls": [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": json.dumps(dict(c.input), ensure_ascii=False)},
                    }
                    for c in calls
                ],
            }
        )
        messages += [
            {"role": "tool", "tool_call_id": c.id, "content": json.dumps(tool_result_document(c), ensure_ascii=False)}
            for c in calls
        ]
    return messages


class OpenAIChatModel:
    name = "openai"
    cites_passages = False

    def __init__(self, base_url: str = DEFAULT_BASE_URL, api_key: str = "", *, timeout: float = 60.0):
        if not base_url.startswith(("http://", "https://")):
            raise ModelNotConfigured("OPENAI_BASE_URL must be an http(s) URL")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> OpenAIChatModel:
        try:
            timeout = float(env.get("OPENAI_TIMEOUT_SECONDS", "60"))
        except ValueError:
            raise ModelNotConfigured("OPENAI_TIMEOUT_SECONDS must be a number")
        return cls(env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL, env.get("OPENAI_API_KEY", ""), timeout=timeout)

    def request_body(self, model_input: ModelInput) -> dict[str, Any]:
        if not model_input.spec.model_id:
            raise ModelNotConfigured("model.model_id is required for the openai provider")
        messages = [{"role": "system", "content": model_input.system}] if model_input.system else []
        messages += [{"role": m.role, "content": m.content} for m in model_input.messages]
        messages += tool_messages(model_input.tool_rounds)
        body: dict[str, Any] = {
            "model": model_input.spec.model_id,
            "messages": messages,
            "max_tokens": model_input.spec.max_tokens,
            "temperature": model_input.spec.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if model_input.tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": dict(t.input_schema)},
                }
                for t in model_input.tools
            ]
        if model_input.metadata.get("tenant_id"):
            body["user"] = f"tenant:{model_input.metadata['tenant_id']}"  # the provider's abuse attribution
        return body

    def _open(self, body: dict[str, Any]):
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(  # noqa: S310 (scheme checked in __init__)
            f"{self.base_url}/chat/completions", data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)  # noqa: S310
        except urllib.error.HTTPError as exc:
            message = _error_message(exc.read(4096))
            exc.close()
            if exc.code == 429:
                raise ModelThrottled(f"the model endpoint is throttling: {message}")
            if exc.code >= 500:
                raise ModelUnavailable(f"the model endpoint failed ({exc.code}): {message}")
            raise ModelError(f"the model endpoint refused the request ({exc.code}): {message}")
        except TimeoutError:
            raise ModelTimeout("the model endpoint did not answer in time")
        except (urllib.error.URLError, OSError) as exc:
            raise ModelUnavailable(f"the model endpoint is unreachable: {getattr(exc, 'reason', exc)}")

    def generate(self, model_input: ModelInput, *, stream: bool) -> Iterator[ModelEvent]:
        response = self._open(self.request_body(model_input))
        tool_calls: dict[int, dict[str, str]] = {}
        usage: Usage | None = None
        model = model_input.spec.model_id
        try:
            lines = iter(lambda: response.readline(MAX_LINE_BYTES), b"")
            for data in iter_sse_data(lines):
                if data.strip() == "[DONE]":
                    break
                try:
                    chunk = json.loads(data)
                except ValueError:
                    raise ModelError("the model endpoint sent a chunk that is not JSON")
                if not isinstance(chunk, Mapping):
                    continue
                if chunk.get("error"):
                    detail = _error_message(json.dumps(chunk).encode())
                    raise ModelError(f"the model endpoint failed mid-stream: {detail}")
                model = chunk.get("model") or model
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if delta.get("content"):
                        yield Delta(text=delta["content"])
                    for call in delta.get("tool_calls") or []:
                        slot = tool_calls.setdefault(int(call.get("index", 0)), {"id": "", "name": "", "arguments": ""})
                        slot["id"] = call.get("id") or slot["id"]
                        function = call.get("function") or {}
                        slot["name"] = function.get("name") or slot["name"]
                        slot["arguments"] += function.get("arguments") or ""
                if isinstance(chunk.get("usage"), Mapping):
                    u = chunk["usage"]
                    usage = Usage(
                        input_tokens=int(u.get("prompt_tokens") or 0),
                        output_tokens=int(u.get("completion_tokens") or 0),
                        estimated=False,
                        model=model,
                    )
        except TimeoutError:
            raise ModelTimeout("the model endpoint stopped sending")
        except OSError as exc:
            raise ModelUnavailable(f"the model stream broke: {exc}")
        finally:
            response.close()
        for _, call in sorted(tool_calls.items()):
            yield ToolCall(name=call["name"], input=_arguments(call["arguments"]), id=call["id"])
        if usage is not None:
            yield Usage(usage.input_tokens, usage.output_tokens, estimated=False, model=model)


def _arguments(raw: str) -> dict:
    """Tool arguments as a dict; a model that produced broken JSON keeps its text under ``_raw``."""
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {"_raw": raw}
    return parsed if isinstance(parsed, dict) else {"value": parsed}

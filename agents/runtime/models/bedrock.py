"""Amazon Bedrock through the Converse API (boto3 ``bedrock-runtime``).

Converse is model-agnostic (Claude, Llama, Nova, Mistral … and custom or
fine-tuned models), so one mapping serves every Bedrock model: ``modelId`` may
be a model id, an inference-profile ARN or a custom-model ARN, exactly what a
``ModelOffering.model_id`` holds.

* streaming invocations call ``converse_stream``; non-streaming ones ``converse``;
* the request carries ``system``, alternating ``messages``, ``inferenceConfig``
  (``maxTokens``, ``temperature``), ``toolConfig`` when tools are offered, and
  ``requestMetadata`` with the tenant id, tier and invocation id, so Bedrock's
  invocation logs can be attributed per tenant; every tool round so far
  follows the prompt, in order, as an assistant message (its text and ``toolUse``
  blocks) and one user message of ``toolResult`` blocks for those calls (``json``
  content, ``status: error`` for a call that did not run);
* stream events map as: ``contentBlockDelta.delta.text`` → ``Delta``; a
  ``contentBlockStart.start.toolUse`` opens a tool call whose JSON input arrives
  as ``contentBlockDelta.delta.toolUse.input`` fragments and closes at
  ``contentBlockStop`` → ``ToolCall``; ``metadata.usage`` → ``Usage`` (measured).

Errors map to contract codes: throttling → ``model_throttled``; service
unavailable, internal errors, model-not-ready and model timeouts → retryable;
validation, access and not-found errors → ``model_error`` (retrying will not help).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from agents.runtime.contract import Delta, ToolCall, Usage
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

THROTTLED = {"ThrottlingException", "throttlingException", "TooManyRequestsException"}
TIMEOUT = {"ModelTimeoutException"}
UNAVAILABLE = {
    "ServiceUnavailableException",
    "serviceUnavailableException",
    "InternalServerException",
    "internalServerException",
    "ModelNotReadyException",
    "modelStreamErrorException",
}
_METADATA_VALUE_RE = re.compile(r"[^a-zA-Z0-9\s:_@$#=/+,\-.]")
MAX_METADATA_ITEMS = 16  # Bedrock's limit for requestMetadata


def map_client_error(exc: Exception) -> ModelError:
    """A botocore ClientError (or EventStreamError) as a ModelError with a contract code."""
    error = getattr(exc, "response", {}).get("Error", {})
    return map_error(error.get("Code", ""), error.get("Message", str(exc)))


def map_error(code: str, message: str) -> ModelError:
    message = f"Bedrock {code or 'error'}: {message}"[:500]
    if code in THROTTLED:
        return ModelThrottled(message)
    if code in TIMEOUT:
        return ModelTimeout(message)
    if code in UNAVAILABLE:
        return ModelUnavailable(message)
    return ModelError(message)


def request_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """Bedrock accepts at most 16 string pairs from a restricted alphabet."""
    out = {}
    for key, value in list(metadata.items())[:MAX_METADATA_ITEMS]:
        key = _METADATA_VALUE_RE.sub("", str(key))[:256]
        if key:
            out[key] = _METADATA_VALUE_RE.sub("", str(value))[:256]
    return out


class BedrockModel:
    name = "bedrock"
    cites_passages = False

    def __init__(self, client: Any = None, *, region_name: str | None = None):
        self._client = client
        self.region_name = region_name

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> BedrockModel:
        return cls(region_name=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None)

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3  # imported here: an offline-only runtime never pays for it
            from botocore.config import Config

            config = Config(connect_timeout=5, read_timeout=120, retries={"mode": "standard", "max_attempts": 3})
            try:
                self._client = boto3.client("bedrock-runtime", region_name=self.region_name, config=config)
            except Exception as exc:  # NoRegionError and friends: a configuration problem
                raise ModelNotConfigured(f"cannot create the Bedrock client: {exc}")
        return self._client

    def request_params(self, model_input: ModelInput) -> dict[str, Any]:
        if not model_input.spec.model_id:
            raise ModelNotConfigured("model.model_id is required for the bedrock provider")
        params: dict[str, Any] = {
            "modelId": model_input.spec.model_id,
            "messages": [{"role": m.role, "content": [{"text": m.content}]} for m in model_input.messages]
            + tool_messages(model_input.tool_rounds),
            "inferenceConfig": {
                "maxTokens": model_input.spec.max_tokens,
                "temperature": min(model_input.spec.temperature, 1.0),  # Converse caps temperature at 1
            },
        }
        if model_input.system:
            params["system"] = [{"text": model_input.system}]
        if model_input.tools:
            params["toolConfig"] = {
                "tools": [
                    {
                        "toolSpec": {
                            "name": t.name,
                            "description": t.description or t.name,
                            "inputSchema": {"json": dict(t.input_schema)},
                        }
                    }
                    for t in model_input.tools
                ]
            }
        metadata = request_metadata(model_input.metadata)
        if metadata:
            params["requestMetadata"] = metadata
        return params

    def generate(self, model_input: ModelInput, *, stream: bool) -> Iterator[ModelEvent]:
        from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError

        params = self.request_params(model_input)
        try:
            if stream:
                events = self.client.converse_stream(**params)["stream"]
                try:
                    yield from map_stream(events, model_input.spec.model_id)
                finally:
                    close = getattr(events, "close", None)  # release the HTTP connection now
                    if close is not None:
                        close()
            else:
                yield from map_converse(self.client.converse(**params), model_input.spec.model_id)
        except ClientError as exc:
            raise map_client_error(exc)
        except ReadTimeoutError as exc:
            raise ModelTimeout(f"Bedrock did not answer in time: {exc}")
        except BotoCoreError as exc:
            raise ModelUnavailable(f"Bedrock is unreachable: {exc}")


def tool_messages(rounds: Iterable[ToolRound]) -> list[dict]:
    """The tool rounds so far as Converse messages after the prompt, two per round: the
    assistant's text and toolUse blocks, then ONE user message with a toolResult block per
    call (status "error" for a call that did not run). Converse checks that the toolResults
    of a user message answer the toolUse blocks of the assistant message just before it."""
    messages = []
    for tool_round in rounds:
        said = [{"text": tool_round.text}] if tool_round.text.strip() else []  # Converse refuses blank text
        uses = [{"toolUse": {"toolUseId": c.id, "name": c.name, "input": dict(c.input)}} for c in tool_round.calls]
        results = []
        for call in tool_round.calls:
            block = {"toolUseId": call.id, "content": [{"json": tool_result_document(call)}]}
            if call.error:
                block["status"] = "error"
            results.append({"toolResult": block})
        messages += [{"role": "assistant", "content": said + uses}, {"role": "user", "content": results}]
    return messages


def _tool_input(raw: str) -> dict:
    if not raw.strip():
        return {}
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {"_raw": raw}
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def map_stream(stream: Iterable[Mapping[str, Any]], model_id: str) -> Iterator[ModelEvent]:
    """ConverseStream events → contract events. In-stream exceptions raise ModelError."""
    tools: dict[int, dict[str, str]] = {}
    for event in stream:
        if "contentBlockStart" in event:
            block = event["contentBlockStart"]
            tool = (block.get("start") or {}).get("toolUse")
            if tool:
                tools[block.get("contentBlockIndex", 0)] = {
                    "id": tool.get("toolUseId", ""),
                    "name": tool.get("name", ""),
                    "input": "",
                }
        elif "contentBlockDelta" in event:
            block = event["contentBlockDelta"]
            delta = block.get("delta") or {}
            if delta.get("text"):
                yield Delta(text=delta["text"])
            if "toolUse" in delta:
                slot = tools.setdefault(block.get("contentBlockIndex", 0), {"id": "", "name": "", "input": ""})
                slot["input"] += delta["toolUse"].get("input", "")
        elif "contentBlockStop" in event:
            tool = tools.pop(event["contentBlockStop"].get("contentBlockIndex", 0), None)
            if tool is not None:
                yield ToolCall(name=tool["name"], input=_tool_input(tool["input"]), id=tool["id"])
        elif "metadata" in event:
            usage = event["metadata"].get("usage") or {}
            yield Usage(
                input_tokens=int(usage.get("inputTokens", 0)),
                output_tokens=int(usage.get("outputTokens", 0)),
                estimated=False,
                model=model_id,
            )
        else:
            # botocore raises EventStreamError for these; a plain iterable may carry them as events.
            for key, body in event.items():
                if key.endswith("Exception"):
                    raise map_error(key, (body or {}).get("message", ""))
    for tool in tools.values():  # a stream cut before contentBlockStop still reports the call
        yield ToolCall(name=tool["name"], input=_tool_input(tool["input"]), id=tool["id"])


def map_converse(response: Mapping[str, Any], model_id: str) -> Iterator[ModelEvent]:
    """A Converse response → contract events (one delta with the whole text)."""
    content = ((response.get("output") or {}).get("message") or {}).get("content") or []
    text = "".join(block.get("text", "") for block in content if "text" in block)
    if text:
        yield Delta(text=text)
    for block in content:
        if "toolUse" in block:
            tool = block["toolUse"]
            yield ToolCall(name=tool.get("name", ""), input=dict(tool.get("input") or {}), id=tool.get("toolUseId", ""))
    usage = response.get("usage")
    if usage:
        yield Usage(
            input_tokens=int(usage.get("inputTokens", 0)),
            output_tokens=int(usage.get("outputTokens", 0)),
            estimated=False,
            model=model_id,
        )

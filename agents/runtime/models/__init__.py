"""Model providers inside the reference agent: ``offline``, ``openai``, ``bedrock``.

A request names its provider (``model.provider``); an empty name means the
runtime's default, ``MODEL_PROVIDER`` (``offline`` unless configured). Providers
are built lazily on first use and then reused: a runtime that only ever
answers offline never imports boto3 or needs an endpoint, and a misconfigured
provider fails the invocations that ask for it (``model_not_configured``), not
the whole runtime.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping

from agents.runtime.contract import PROVIDERS
from agents.runtime.models.base import (
    ModelError,
    ModelInput,
    ModelNotConfigured,
    ModelProvider,
    ModelThrottled,
    ModelTimeout,
    ModelUnavailable,
    estimate_input_tokens,
    estimate_tokens,
)

__all__ = [
    "ModelError",
    "ModelInput",
    "ModelNotConfigured",
    "ModelProvider",
    "ModelThrottled",
    "ModelTimeout",
    "ModelUnavailable",
    "ProviderRegistry",
    "estimate_input_tokens",
    "estimate_tokens",
]


class ProviderRegistry:
    def __init__(self, factories: Mapping[str, Callable[[], ModelProvider]], *, default: str = "offline"):
        if default not in factories:
            raise ValueError(f"the default provider {default!r} has no factory")
        self._factories = dict(factories)
        self.default = default
        self._built: dict[str, ModelProvider] = {}
        self._lock = threading.Lock()

    def get(self, name: str = "") -> ModelProvider:
        name = name or self.default
        with self._lock:
            provider = self._built.get(name)
            if provider is None:
                factory = self._factories.get(name)
                if factory is None:
                    raise ModelNotConfigured(f"the model provider {name!r} is not available in this runtime")
                provider = self._built[name] = factory()
            return provider

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> ProviderRegistry:
        default = env.get("MODEL_PROVIDER", "offline") or "offline"
        if default not in PROVIDERS:
            raise ValueError(f"MODEL_PROVIDER must be one of {', '.join(PROVIDERS)}, not {default!r}")

        def offline() -> ModelProvider:
            from agents.runtime.models.offline import OfflineModel

            return OfflineModel()

        def openai() -> ModelProvider:
            from agents.runtime.models.openai import OpenAIChatModel

            return OpenAIChatModel.from_env(env)

        def bedrock() -> ModelProvider:
            from agents.runtime.models.bedrock import BedrockModel

            return BedrockModel.from_env(env)

        return cls({"offline": offline, "openai": openai, "bedrock": bedrock}, default=default)

    @classmethod
    def offline_only(cls) -> ProviderRegistry:
        from agents.runtime.models.offline import OfflineModel

        return cls({"offline": OfflineModel}, default="offline")

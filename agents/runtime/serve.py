"""Run the reference runtime as a standalone process: ``python -m agents.runtime.serve``.

This is what goes into a runtime container (AgentCore Runtime expects port
8080 on all interfaces) or runs next to the portal for the ``http`` runtime
client. It imports no Django: the runtime knows the portal only by its JWKS
URL and issuer, and the tenant only by what each request's token proves.

Configuration (environment; flags win for host and port):

``RUNTIME_JWKS_URL``  the portal's JWKS, e.g. ``https://portal.example.com/.well-known/jwks.json`` (required)
``RUNTIME_ISSUER``    the ``iss`` of the portal's tokens (required)
``RUNTIME_AUDIENCE``  the ``aud`` the tokens must carry (default ``agent-runtime``)
``RUNTIME_LEEWAY_SECONDS``  clock-skew allowance for ``exp``/``nbf`` (default 30)
``PORTAL_GATEWAY_URL``  the portal's base URL, for knowledge retrieval and tools with the caller's token (optional)
``MODEL_PROVIDER``    provider for requests that name none: offline | openai | bedrock (default offline)
``OPENAI_BASE_URL``, ``OPENAI_API_KEY``, ``AWS_REGION`` …  see ``agents/runtime/models``

Bad configuration stops the process at start with a message, not at the first request.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence

from agents.runtime.agent import ReferenceAgent
from agents.runtime.auth import DEFAULT_AUDIENCE, DEFAULT_LEEWAY_SECONDS, HttpKeyProvider, TokenVerifier
from agents.runtime.host import RuntimeHost
from agents.runtime.models import ProviderRegistry
from agents.runtime.server import RuntimeApp

DEFAULT_PORT = 8080
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 (a container's port must be reachable from outside it)


class ConfigError(Exception):
    pass


def build_app(env: Mapping[str, str] = os.environ) -> RuntimeApp:
    jwks_url = env.get("RUNTIME_JWKS_URL", "").strip()
    issuer = env.get("RUNTIME_ISSUER", "").strip()
    if not jwks_url:
        raise ConfigError("RUNTIME_JWKS_URL is required (the portal's /.well-known/jwks.json)")
    if not issuer:
        raise ConfigError("RUNTIME_ISSUER is required (the iss of the portal's tokens)")
    try:
        leeway = float(env.get("RUNTIME_LEEWAY_SECONDS", str(DEFAULT_LEEWAY_SECONDS)))
    except ValueError:
        leeway = -1.0
    if not 0 <= leeway <= 300:
        raise ConfigError("RUNTIME_LEEWAY_SECONDS must be a number of seconds between 0 and 300")
    try:
        keys = HttpKeyProvider(jwks_url)
        providers = ProviderRegistry.from_env(env)
    except ValueError as exc:
        raise ConfigError(f"{exc} (RUNTIME_JWKS_URL, MODEL_PROVIDER)")
    verifier = TokenVerifier(
        keys, issuer=issuer, audience=env.get("RUNTIME_AUDIENCE", "").strip() or DEFAULT_AUDIENCE, leeway=leeway
    )
    knowledge = tools = memory = None
    gateway_url = env.get("PORTAL_GATEWAY_URL", "").strip()
    if gateway_url:
        from agents.runtime.knowledge import HttpKnowledgeGateway
        from agents.runtime.memory import HttpMemoryGateway
        from agents.runtime.tools import HttpToolGateway

        try:
            knowledge = HttpKnowledgeGateway(gateway_url)
            tools = HttpToolGateway(gateway_url)
            memory = HttpMemoryGateway(gateway_url)
        except ValueError as exc:
            raise ConfigError(str(exc))
    return RuntimeApp(RuntimeHost(verifier, ReferenceAgent(providers, knowledge=knowledge, tools=tools, memory=memory)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents.runtime.serve", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default=ALL_INTERFACES, help="interface to bind (default: all)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default: 8080, as AgentCore expects)")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "info").lower())
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        app = build_app()
    except ConfigError as exc:
        print(f"runtime: {exc}", file=sys.stderr)
        return 2

    import uvicorn

    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=30,  # let running invocations finish when the container stops
        proxy_headers=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tools: the operator's registry, a tenant's choice per agent, and the gateway that runs them.

* Registry (operators): `save_tool` creates or changes a `Tool`, audited.
* Entitlement: a tool may run for an agent in a tenant when it is available, its
  tiers include the tenant's tier, and a tenant admin enabled it for the agent
  (`AgentTool`). `tools_for_agent` is that list; `tool_specs` is what a turn
  offers the model.
* Gateway (`invoke_for_token`): what an agent runtime calls, with its act-on-
  behalf token (aud agent-runtime, scope tools:invoke), the same way the
  knowledge gateway works: the tenant and the acting user are the token's, the
  agent must be the token's actor, and the input must match the tool's schema.
  Refusals are `GatewayRefused(status, detail)`; nothing else escapes.
* A silo tenant's own AgentCore Gateway (`served_by_gateway`, agents/tools/agentcore.py):
  on the AWS runtime it serves the tenant's tools instead of the built-in handlers; the
  listing is still filtered by the enablement above, a call still checked before it is
  forwarded, and its result still screened.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import logging
import time

import jsonschema
from django.db import DatabaseError, connection, transaction

from agents.tools import handlers
from agents.tools.models import AgentTool, Tool, ToolStatus
from tenants import audit, entitlements
from tenants.context import require_tenant
from tenants.identity.gateway import AgentCall, GatewayRefused, agent_call
from tenants.models import Tenant
from tenants.roles import Action, require
from tenants.services import Actor, ServiceError

log = logging.getLogger(__name__)

SCOPE = "tools:invoke"
FEATURE = "tools"
TIME_LIMIT_SECONDS = 5.0

# One worker thread pool for the pure handlers' time limit (a stuck handler keeps its
# thread, never the request's).
_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="tool")


# --- registry (operators) --------------------------------------------------------------------


def _tool_view(tool: Tool) -> dict:
    return {
        "key": tool.key,
        "name": tool.name,
        "description": tool.description,
        "handler": tool.handler,
        "status": tool.status,
        "tiers": sorted(tool.tiers.values_list("slug", flat=True)) if tool.pk else [],
        "input_schema": tool.input_schema,
    }


def check_schema(schema) -> None:
    """Raise ServiceError unless `schema` is a JSON Schema of an object."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise ServiceError('The input schema must be a JSON Schema object ({"type": "object", ...}).')
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ServiceError(f"The input schema is not valid JSON Schema: {exc.message}")


def save_tool(user, tool: Tool, *, tiers, ip: str | None = None) -> Tool:
    """Create or change a registry entry (operator console), audited with before and after."""
    if not (user.is_active and user.is_staff):
        raise ServiceError("Only operators manage the tool registry.")
    check_schema(tool.input_schema)
    if tool.handler not in handlers.HANDLERS:
        raise ServiceError("Unknown handler.")
    before = _tool_view(Tool.objects.get(pk=tool.pk)) if tool.pk else {}
    with transaction.atomic():
        created = tool.pk is None
        tool.save()
        tool.tiers.set(tiers)
        audit.record(
            "tools.tool_created" if created else "tools.tool_updated",
            actor=user,
            target=tool,
            before=before,
            after=_tool_view(tool),
            ip=ip,
        )
    return tool


# --- entitlement ----------------------------------------------------------------------------


def entitled(tenant: Tenant) -> bool:
    """Whether the tenant's plan includes agent tools at all (the `tools` feature): without it
    no tool is offered, listed or run, whatever the registry's tiers say."""
    return entitlements.has_feature(tenant, FEATURE)


def tier_tools(tenant: Tenant):
    """The available tools the tenant's tier allows (what its admins may enable)."""
    if not entitled(tenant):
        return Tool.objects.none()
    return Tool.objects.filter(status=ToolStatus.AVAILABLE, tiers=tenant.tier_id).order_by("name")


def tools_for_agent(tenant: Tenant, agent) -> list[Tool]:
    """The tools `agent` may call in `tenant` (in the context): enabled here, available, tier-allowed."""
    enabled = AgentTool.objects.filter(agent=agent).values_list("tool_id", flat=True)
    return list(tier_tools(tenant).filter(pk__in=enabled))


def served_by_gateway(tenant: Tenant) -> str:
    """The id of the tenant's own AgentCore Gateway when it serves the tenant's tools (a silo
    tenant's gateway_id binding, on the AWS runtime), else "": the portal's handlers do."""
    from agents.tools import agentcore

    return agentcore.gateway_id(tenant)


def _gateway_client(call: AgentCall, gateway: str):
    """A client of the call tenant's AgentCore Gateway for the call's user and agent."""
    from agents.tools import agentcore

    return agentcore.client(
        call.tenant,
        gateway,
        token=call.token,
        identity=call.agent.identity,
        session_id=str(call.claims.get("session_id") or ""),
        user_id=call.user.pk,
    )


def _gateway_listing(call: AgentCall, gateway: str) -> dict[str, dict]:
    """The tools the tenant's AgentCore Gateway lists, by name. Raises GatewayRefused(502)."""
    from agents.tools import agentcore

    try:
        return {tool["name"]: tool for tool in _gateway_client(call, gateway).list_tools()}
    except agentcore.GatewayError as exc:
        raise GatewayRefused(502, f"The tools could not be listed: {exc}.")


def _schema_of(listed: dict) -> dict:
    schema = listed.get("inputSchema")
    return schema if isinstance(schema, dict) else {"type": "object", "properties": {}}


def gateway_tool_specs(raw_token: str, keys: list[str], *, agent_slug: str = "") -> list[dict]:
    """The ToolSpecs of the tools named `keys` (the turn's enabled ones, in that order) that the
    AgentCore Gateway of the tenant of `raw_token` (the turn's act-on-behalf token) lists, as
    the gateway describes them: a tool the gateway does not serve is not offered, and one it
    serves but the tenant did not enable never is. Raises GatewayRefused."""
    with agent_call(raw_token, SCOPE, agent_slug, name="tools gateway") as call:
        listed = _gateway_listing(call, served_by_gateway(call.tenant))
    return [
        {
            "name": key,
            "description": str(listed[key].get("description") or "")[:4000],
            "input_schema": _schema_of(listed[key]),
        }
        for key in keys
        if key in listed
    ]


def listed_tools(call: AgentCall) -> list[dict]:
    """The tools an agent call may see, as MCP tool objects: the tools enabled for the acting
    agent here; on a tenant whose AgentCore Gateway serves its tools, those of them the
    gateway lists, as it describes them. Raises GatewayRefused when the gateway cannot say."""
    tools = tools_for_agent(call.tenant, call.agent)
    gateway = served_by_gateway(call.tenant) if tools else ""
    if not gateway:
        return [
            {"name": tool.key, "title": tool.name, "description": tool.description, "inputSchema": tool.input_schema}
            for tool in tools
        ]
    listed = _gateway_listing(call, gateway)
    return [
        {
            "name": tool.key,
            "title": tool.name,
            "description": str(listed[tool.key].get("description") or tool.description),
            "inputSchema": _schema_of(listed[tool.key]),
        }
        for tool in tools
        if tool.key in listed
    ]


def enabled_tool_ids(agent) -> set[int]:
    return set(AgentTool.objects.filter(agent=agent).values_list("tool_id", flat=True))


def tool_specs(tenant: Tenant, agent) -> list[dict]:
    """What a turn offers the model: the contract's ToolSpec of each tool the agent may call."""
    return [
        {"name": tool.key, "description": tool.description, "input_schema": tool.input_schema}
        for tool in tools_for_agent(tenant, agent)
    ]


def why_agent_cannot_call_tools(agent) -> str | None:
    """Why `agent` can call no tool whatever the tenant enables, or None when it can.

    A turn's token is exchanged for at most the scopes the agent's workload identity
    allows (``allowed_scopes``; empty means unrestricted), and the turn offers tools only
    when tools:invoke is among them (runtime_gateway.tool_specs), so an identity narrowed
    without it, or an agent without an identity, is never offered a tool."""
    identity = agent.identity
    if identity is None:
        return f"{agent.name} has no workload identity, so it cannot call tools; an operator must issue one."
    if identity.allowed_scopes and SCOPE not in identity.allowed_scopes:
        return (
            f"{agent.name} cannot call tools: its workload identity “{identity.name}” may not use the scope "
            f"{SCOPE}. An operator must grant {SCOPE} to that identity first."
        )
    return None


def set_agent_tools(actor: Actor, agent, tool_ids: list[int]) -> list[Tool]:
    """The tenant admin's choice of tools for `agent` (replaces the previous one), audited.
    Switching tools off is always allowed; switching them on for an agent that cannot call
    tools (why_agent_cannot_call_tools) is refused rather than shown as "on" and never used."""
    tenant = require_tenant()
    if actor.membership is None or actor.membership.tenant_id != tenant.pk:
        raise ServiceError("You are not a member of this tenant.")
    require(actor.role, Action.MANAGE_AGENTS)
    allowed = {tool.pk: tool for tool in tier_tools(tenant)}
    unknown = set(tool_ids) - set(allowed)
    if unknown:
        raise ServiceError(f"The {tenant.tier.name} plan does not include that tool.")
    chosen = [allowed[pk] for pk in sorted(set(tool_ids))]
    blocked = why_agent_cannot_call_tools(agent) if chosen else None
    if blocked:
        raise ServiceError(blocked)
    before = sorted(Tool.objects.filter(pk__in=enabled_tool_ids(agent)).values_list("key", flat=True))
    with transaction.atomic():
        AgentTool.objects.filter(agent=agent).delete()
        AgentTool.objects.bulk_create([AgentTool(tenant_id=tenant.pk, agent=agent, tool=tool) for tool in chosen])
        audit.record(
            "tools.agent_tools_changed",
            actor=actor.user,
            tenant=tenant,
            target=agent,
            before={"tools": before},
            after={"tools": sorted(tool.key for tool in chosen)},
            ip=actor.ip,
        )
    return chosen


# --- the gateway ----------------------------------------------------------------------------


class DatabaseTimeLimit(Exception):
    """A handler's database work ran past its time limit."""


def _is_query_canceled(exc: BaseException) -> bool:
    cause = exc.__cause__
    # PostgreSQL's query_canceled (statement_timeout); SQLite's answer to a progress handler's stop.
    return getattr(cause, "sqlstate", None) == "57014" or "interrupted" in str(exc)


@contextlib.contextmanager
def database_time_limit(seconds: float):
    """Bound the database work of a handler that reads it (so runs in the request's thread,
    on its connection, where the worker pool's limit cannot reach): in a transaction of its
    own, each statement gets only the time left — PostgreSQL's statement_timeout, set
    locally; on SQLite a progress handler interrupts a statement past the deadline — and no
    statement starts after it. Raises DatabaseTimeLimit."""
    deadline = time.monotonic() + seconds
    postgresql = connection.vendor == "postgresql"

    def bounded(execute, sql, params, many, context):
        left_ms = int((deadline - time.monotonic()) * 1000)
        if left_ms <= 0:
            raise DatabaseTimeLimit()
        if postgresql:
            execute("SELECT set_config('statement_timeout', %s, true)", [f"{left_ms}ms"], False, context)
        return execute(sql, params, many, context)

    try:
        with transaction.atomic():
            connection.ensure_connection()
            sqlite = connection.connection if connection.vendor == "sqlite" else None
            previous = None
            if postgresql:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT current_setting('statement_timeout')")
                    previous = cursor.fetchone()[0]
            if sqlite is not None:
                sqlite.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
            try:
                with connection.execute_wrapper(bounded):
                    yield
            finally:
                if sqlite is not None:
                    sqlite.set_progress_handler(None, 0)
            if postgresql:
                # A local setting outlives a released savepoint: give the rest of an
                # enclosing transaction its own limit back.
                with connection.cursor() as cursor:
                    cursor.execute("SELECT set_config('statement_timeout', %s, true)", [previous])
    except DatabaseError as exc:
        if time.monotonic() >= deadline or _is_query_canceled(exc):
            raise DatabaseTimeLimit() from exc
        raise


def _run(tool: Tool, data: dict, call: handlers.Call):
    handler = handlers.HANDLERS[tool.handler]
    too_slow = GatewayRefused(504, f"The tool {tool.key} took longer than {TIME_LIMIT_SECONDS:g} s.")
    if tool.handler not in handlers.PURE:
        try:
            with database_time_limit(TIME_LIMIT_SECONDS):
                return handler(data, call)
        except DatabaseTimeLimit:
            raise too_slow from None
    future = _pool.submit(contextvars.copy_context().run, handler, data, call)
    try:
        return future.result(timeout=TIME_LIMIT_SECONDS)
    except concurrent.futures.TimeoutError:
        raise too_slow from None


def invoke_for_token(raw_token: str, *, tool_key, tool_input, agent_slug="", tenant_id: str | None = None) -> dict:
    """Run a tool for an agent acting for a user: the body of the tools gateway endpoint.

    Returns the handler's result; raises GatewayRefused for every refusal."""

    def check_input(tenant: Tenant) -> None:
        if not isinstance(tool_key, str) or not tool_key:
            raise GatewayRefused(400, "tool: name the tool to run.")
        if not isinstance(tool_input, dict):
            raise GatewayRefused(400, "input: give the tool's input as a JSON object.")

    with agent_call(
        raw_token, SCOPE, agent_slug, tenant_id=tenant_id, precheck=check_input, name="tools gateway"
    ) as call:
        return invoke(call, tool_key, tool_input)


def invoke(call: AgentCall, tool_key: str, tool_input: dict):
    """Run `tool_key` for an authorised agent call (in its tenant's context): entitlement,
    schema, handler with its time limit. Raises GatewayRefused for every refusal."""
    tenant, agent = call.tenant, call.agent
    if not entitled(tenant):
        raise GatewayRefused(403, f"The {tenant.tier.name} plan does not include agent tools.")
    tool = Tool.objects.filter(key=tool_key).prefetch_related("tiers").first()
    if tool is None:
        raise GatewayRefused(404, f"There is no tool {tool_key!r}.")
    if not tool.available:
        raise GatewayRefused(403, f"The tool {tool.key} is disabled.")
    if not any(tier.pk == tenant.tier_id for tier in tool.tiers.all()):
        raise GatewayRefused(403, f"The tool {tool.key} is not part of the {tenant.tier.name} plan.")
    if not AgentTool.objects.filter(agent=agent, tool=tool).exists():
        raise GatewayRefused(403, f"The tool {tool.key} is not enabled for {agent.name} in this organisation.")
    gateway = served_by_gateway(tenant)
    if gateway:
        # Only now, enabled and allowed, does the call leave the portal; its result comes back
        # through the same screening as a handler's.
        return _screened(call, tool, _run_on_gateway(call, tool, tool_input, gateway))
    validator = jsonschema.Draft202012Validator(tool.input_schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(tool_input))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "input"
        raise GatewayRefused(400, f"{where}: {error.message}"[:500])
    handler_call = handlers.Call(tenant=tenant, user_id=call.user.pk, roles=call.roles)
    try:
        result = _run(tool, tool_input, handler_call)
    except handlers.ToolFailed as exc:
        raise GatewayRefused(exc.status, exc.detail)
    except GatewayRefused:
        raise
    except Exception:
        log.exception("tool %s failed", tool.key)
        raise GatewayRefused(502, f"The tool {tool.key} failed.")
    return _screened(call, tool, result)


def _run_on_gateway(call: AgentCall, tool: Tool, tool_input: dict, gateway: str):
    """Run `tool` on the tenant's AgentCore Gateway (which validates the input against its own
    schema), for the user the call's act-on-behalf token names. Raises GatewayRefused."""
    from agents.tools import agentcore

    try:
        return agentcore.result_value(_gateway_client(call, gateway).call_tool(tool.key, tool_input))
    except agentcore.ToolError as exc:
        raise GatewayRefused(400, f"The tool {tool.key} failed: {exc}")
    except agentcore.GatewayError as exc:
        raise GatewayRefused(502, f"The tool {tool.key} could not run: {exc}.")


def _screened(call: AgentCall, tool: Tool, result):
    """The result as the model may see it: screened by the tenant's guardrail policy here, on the
    portal's side, so that every runtime gets it (a tool's answer may carry text from outside)."""
    from agents.guardrails.enforce import screen_tool_result
    from agents.guardrails.engine import BackendError
    from agents.runtime_gateway import turn_in_progress

    try:
        return screen_tool_result(call.tenant, result, tool=tool.key, turn=lambda: turn_in_progress(call.token))
    except BackendError as exc:
        # A check that could not run (a custom pattern timed out): nothing unscreened goes out.
        log.warning("screening the result of %s failed: %s", tool.key, exc)
        raise GatewayRefused(503, f"The result of {tool.key} could not be screened; try again later.")

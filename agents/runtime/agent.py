"""The reference agent: what a runtime hosts. One verified request in, events out.

It is deliberately small: shape the conversation for a model (instructions,
numbered context passages, alternating turns), stream the provider's answer,
and frame it so that every invocation ends the same way whatever happened:

    delta* (tool_call | citation)* usage done      on success
    delta* … error done                              on failure

so a caller can rely on ``done`` to know the stream is complete, on exactly
one ``usage`` for a successful turn (estimated and flagged when the provider
reported none), and on ``error`` carrying a contract code and ``retryable``
instead of an exception crossing the wire. Nothing here raises to the caller.

Tools: when the request offers tools, the agent has a tools gateway and the
token carries ``tools:invoke``, a ``tool_call`` from the model is run through
the portal's gateway (never here) and reported with its ``result`` or
``error``; every round so far goes back to the model (its text and calls, then
their results, round by round), which continues, for at most
:data:`~agents.runtime.tools.MAX_TOOL_ROUNDS` rounds. The usage event sums the
rounds. Without a gateway or the scope, calls are reported as before and not run.

Citations: providers that cannot point at passages themselves (LLMs) are asked
to cite the numbered sources as ``[n]``; the agent turns the markers that name
a real passage into ``citation`` events. The offline model cites for itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator

from agents.runtime.auth import Caller
from agents.runtime.contract import Citation, Delta, Done, Error, Event, InvocationRequest, ToolCall, Usage
from agents.runtime.knowledge import KnowledgeGateway, KnowledgeUnavailable, missing_knowledge_note, wants_knowledge
from agents.runtime.memory import MemoryGateway, MemoryUnavailable, durable_facts, wants_recall, wants_remember
from agents.runtime.models import ProviderRegistry
from agents.runtime.models.base import (
    ModelError,
    ModelInput,
    ToolRound,
    citations_from_markers,
    estimate_input_tokens,
    estimate_tokens,
    normalise_turns,
    render_system_prompt,
)
from agents.runtime.skills import with_skills
from agents.runtime.tools import MAX_TOOL_ROUNDS, ToolFailed, ToolGateway, wants_tools

logger = logging.getLogger(__name__)


def build_model_input(request: InvocationRequest, caller: Caller, memories: tuple[str, ...] = ()) -> ModelInput:
    return ModelInput(
        system=with_skills(
            render_system_prompt(request.agent.instructions, request.passages, memories), request.skills
        ),
        messages=normalise_turns(request.messages, request.prompt),
        prompt=request.prompt,
        spec=request.model,
        instructions=request.agent.instructions,
        agent_name=request.agent.name,
        history=request.messages,
        passages=request.passages,
        tools=request.tools,
        metadata={
            "tenant_id": caller.tenant.tenant_id,
            "tier": caller.tenant.tier,
            "invocation_id": request.invocation_id,
            "agent_id": request.agent.id,
        },
        features=frozenset(caller.tenant.entitlements) | frozenset(caller.tenant.feature_flags),
        memories=memories,
        skills=request.skills,
    )


class ReferenceAgent:
    def __init__(
        self,
        providers: ProviderRegistry | None = None,
        knowledge: KnowledgeGateway | None = None,
        tools: ToolGateway | None = None,
        memory: MemoryGateway | None = None,
    ):
        self.providers = providers or ProviderRegistry.offline_only()
        self.knowledge = knowledge
        self.tools = tools
        self.memory = memory

    def retrieve(self, request: InvocationRequest, caller: Caller) -> tuple[InvocationRequest, str]:
        """The request with passages from the portal's knowledge gateway, when the portal sent
        none and the tenant and token allow retrieval, and the note the answer ends with when
        some or all of the agent's bases could not be searched ("" when all were). A gateway
        failure is logged and noted, never fatal."""
        if self.knowledge is None or request.passages or not wants_knowledge(caller):
            return request, ""
        try:
            retrieval = self.knowledge.retrieve(caller, request.prompt, agent_id=request.agent.id)
        except KnowledgeUnavailable as exc:
            logger.warning("invocation %s: answering without knowledge: %s", request.invocation_id, exc)
            return request, missing_knowledge_note(None)
        if retrieval.unsearched:
            logger.warning(
                "invocation %s: answering without %d knowledge bases",
                request.invocation_id,
                len(retrieval.unsearched),
            )
        note = missing_knowledge_note(retrieval.unsearched) if retrieval.unsearched else ""
        return dataclasses.replace(request, passages=retrieval.passages), note

    def recall(self, request: InvocationRequest, caller: Caller) -> tuple[str, ...]:
        """The member's memories for this prompt, from the portal's memory gateway, when the
        tenant and token allow it. A gateway failure is logged, never fatal."""
        if self.memory is None or not wants_recall(caller):
            return ()
        try:
            memories = self.memory.recall(caller, request.prompt, agent_id=request.agent.id)
        except MemoryUnavailable as exc:
            logger.warning("invocation %s: answering without memory: %s", request.invocation_id, exc)
            return ()
        return tuple(m.content for m in memories)

    def remember(self, request: InvocationRequest, caller: Caller) -> None:
        """Keep the durable facts the member stated in this prompt (memory.durable_facts).
        A gateway failure is logged, never fatal: the answer has been given already."""
        if self.memory is None or not wants_remember(caller):
            return
        for fact in durable_facts(request.prompt):
            try:
                self.memory.remember(caller, fact, agent_id=request.agent.id)
            except MemoryUnavailable as exc:
                logger.warning("invocation %s: a fact was not remembered: %s", request.invocation_id, exc)
                return

    def run(self, request: InvocationRequest, caller: Caller) -> Iterator[Event]:
        """The events of one invocation (see the module docstring for their order)."""
        try:
            yield from self._answer(request, caller)
        except ModelError as exc:
            logger.info("invocation %s: model error %s: %s", request.invocation_id, exc.code, exc.message)
            yield Error(code=exc.code, message=exc.message, retryable=exc.retryable)
        except Exception:
            logger.exception("invocation %s failed", request.invocation_id)
            yield Error(code="internal_error", message="The agent failed; the runtime's log has the details.")
        yield Done()

    def run_tool(self, call: ToolCall, request: InvocationRequest, caller: Caller) -> ToolCall:
        """`call` with the portal's answer: its result, or why it did not run."""
        try:
            result = self.tools.invoke(caller, call.name, dict(call.input), agent_id=request.agent.id)
        except ToolFailed as exc:
            return dataclasses.replace(call, error=str(exc) or "the tool failed")
        if result is None:
            return dataclasses.replace(call, error="the tool answered nothing")
        return dataclasses.replace(call, result=result)

    def _answer(self, request: InvocationRequest, caller: Caller) -> Iterator[Event]:
        provider = self.providers.get(request.model.provider)
        request, knowledge_note = self.retrieve(request, caller)
        # Without a gateway or the scope, calls are reported and not run (as before tools ran).
        runs_tools = bool(request.tools) and self.tools is not None and wants_tools(caller)
        offered = {tool.name for tool in request.tools}
        model_input = build_model_input(request, caller, self.recall(request, caller))
        text: list[str] = []
        usages: list[Usage] = []
        done: list[ToolCall] = []
        rounds: list[ToolRound] = []
        for round_number in range(MAX_TOOL_ROUNDS + 1):
            calls: list[ToolCall] = []
            usage: Usage | None = None
            round_text: list[str] = []
            # closing(): if our consumer goes away mid-stream, the provider's HTTP stream closes now.
            with contextlib.closing(provider.generate(model_input, stream=request.stream)) as events:
                for event in events:
                    if isinstance(event, Delta):
                        if not round_text and text and not text[-1][-1:].isspace():
                            text.append("\n\n")  # the answer after a tool round starts a new paragraph
                            yield Delta(text="\n\n")
                        round_text.append(event.text)
                        text.append(event.text)
                        yield event
                    elif isinstance(event, ToolCall) and runs_tools:
                        calls.append(event)
                    elif isinstance(event, ToolCall | Citation):
                        yield event
                    elif isinstance(event, Usage):
                        usage = event  # held back: usage comes last, after citations
            if usage is None:
                usage = Usage(
                    input_tokens=estimate_input_tokens(model_input),
                    output_tokens=estimate_tokens("".join(round_text)),
                    estimated=True,
                    model=request.model.model_id or provider.name,
                )
            usages.append(usage)
            if not calls:
                break
            ran_this_round: list[ToolCall] = []
            for number, call in enumerate(calls, start=len(done) + 1):
                call = call if call.id else dataclasses.replace(call, id=f"call_{number}")
                if call.name not in offered:
                    ran = dataclasses.replace(call, error=f"there is no tool {call.name!r} in this conversation")
                elif round_number == MAX_TOOL_ROUNDS:
                    ran = dataclasses.replace(call, error=f"the agent stops after {MAX_TOOL_ROUNDS} rounds of tools")
                else:
                    ran = self.run_tool(call, request, caller)
                done.append(ran)
                ran_this_round.append(ran)
                yield ran
            if round_number == MAX_TOOL_ROUNDS:
                break
            # Each round goes back as its own assistant message and results, in order: the
            # providers pair every result with the message that asked for it.
            rounds.append(ToolRound(calls=tuple(ran_this_round), text="".join(round_text)))
            model_input = dataclasses.replace(model_input, tool_rounds=tuple(rounds))
        answer = "".join(text)
        if knowledge_note:
            # After the model's words, as its own paragraph: the member reads the answer knowing
            # what it could not draw on. Not in `answer`, whose [n] markers are the model's citations.
            yield Delta(text=("\n\n" if answer else "") + knowledge_note)
        self.remember(request, caller)
        if not provider.cites_passages:
            yield from citations_from_markers(answer, request.passages)
        yield Usage(
            input_tokens=sum(u.input_tokens for u in usages),
            output_tokens=sum(u.output_tokens for u in usages),
            estimated=any(u.estimated for u in usages),
            model=usages[-1].model,
        )

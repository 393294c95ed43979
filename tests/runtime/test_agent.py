"""The reference agent's framing: citations from markers, usage always, errors as events."""

from __future__ import annotations

from agents.runtime.agent import ReferenceAgent, build_model_input
from agents.runtime.auth import Caller
from agents.runtime.contract import ChatMessage, Citation, Delta, Done, Error, ModelSpec, ToolCall, Usage
from agents.runtime.models import ModelThrottled, ProviderRegistry
from tests.runtime import helpers

CALLER = Caller(tenant=helpers.tenant(), subject="user:17", actors=(helpers.AGENT_SUBJECT,))


class ScriptedModel:
    """Yields the given events, then raises `fail` if set; records its inputs."""

    name = "openai"
    cites_passages = False

    def __init__(self, events, fail: Exception | None = None):
        self.events = events
        self.fail = fail
        self.inputs = []
        self.closed = False

    def generate(self, model_input, *, stream):
        self.inputs.append((model_input, stream))
        try:
            yield from self.events
            if self.fail:
                raise self.fail
        finally:
            self.closed = True


def _agent(model) -> ReferenceAgent:
    return ReferenceAgent(ProviderRegistry({"offline": lambda: model, "openai": lambda: model}))


def _request(**overrides):
    return helpers.request(model=ModelSpec(provider="openai", model_id="llama3"), **overrides)


def test_it_cites_the_passages_an_llm_marks_in_order_of_first_use():
    model = ScriptedModel([Delta("Invoices come monthly [2]. "), Delta("Reset it in Settings [1][2]. See [9].")])
    events = list(_agent(model).run(_request(), CALLER))
    citations = [e for e in events if isinstance(e, Citation)]
    assert [(c.index, c.passage_id) for c in citations] == [(2, "kb-2"), (1, "kb-1")]


def test_it_estimates_and_flags_usage_when_the_provider_reports_none():
    model = ScriptedModel([Delta("12345678")])
    usage = [e for e in _agent(model).run(_request(), CALLER) if isinstance(e, Usage)]
    assert len(usage) == 1
    assert (usage[0].output_tokens, usage[0].estimated, usage[0].model) == (2, True, "llama3")
    assert usage[0].input_tokens > 0


def test_it_passes_measured_usage_through_last():
    model = ScriptedModel([Usage(7, 3, False, "llama3"), Delta("Hi"), ToolCall("lookup", {"q": 1})])
    events = list(_agent(model).run(_request(), CALLER))
    assert [type(e) for e in events] == [Delta, ToolCall, Usage, Done]
    assert events[2] == Usage(7, 3, False, "llama3")


def test_it_turns_a_model_error_into_an_error_event_and_still_ends_with_done():
    model = ScriptedModel([Delta("partial ")], fail=ModelThrottled("slow down"))
    events = list(_agent(model).run(_request(), CALLER))
    assert events == [Delta("partial "), Error("model_throttled", "slow down", True), Done()]


def test_it_hides_unexpected_failures_behind_an_internal_error_event():
    model = ScriptedModel([], fail=KeyError("secret detail"))
    events = list(_agent(model).run(_request(), CALLER))
    assert events == [Error("internal_error", "The agent failed; the runtime's log has the details.", False), Done()]


def test_it_reports_a_provider_the_runtime_does_not_have():
    agent = ReferenceAgent(ProviderRegistry.offline_only())
    events = list(agent.run(helpers.request(model=ModelSpec(provider="bedrock", model_id="m")), CALLER))
    assert isinstance(events[0], Error) and events[0].code == "model_not_configured"
    assert events[0].retryable is False and events[-1] == Done()


def test_it_closes_the_provider_stream_when_the_caller_stops_reading():
    model = ScriptedModel([Delta("a "), Delta("b "), Delta("c ")])
    events = _agent(model).run(_request(), CALLER)
    next(events)
    events.close()
    assert model.closed is True


def test_it_shapes_the_model_input_for_chat_apis():
    history = (ChatMessage("assistant", "Welcome!"), ChatMessage("user", "Hi"), ChatMessage("user", "Anyone?"))
    model_input = build_model_input(_request(messages=history, prompt="Reset?"), CALLER)
    assert [(m.role, m.content) for m in model_input.messages] == [("user", "Hi\n\nAnyone?\n\nReset?")]
    assert model_input.system.startswith("Answer questions about the product.")
    assert "[1] Resetting a password (kb://handbook/passwords)" in model_input.system
    assert model_input.metadata == {
        "tenant_id": helpers.TENANT_ID,
        "tier": "standard",
        "invocation_id": helpers.request().invocation_id,
        "agent_id": "42",
    }

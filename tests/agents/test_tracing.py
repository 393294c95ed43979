"""Every step of a turn is a span with the tenant's attributes: kept on the invocation
(shown under the answer) and emitted to OpenTelemetry when an SDK is configured."""

from __future__ import annotations

import pytest
from opentelemetry import trace as otel
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agents.models import Invocation
from agents.tracing import timeline
from tenants.context import tenant_context
from tests.agents.helpers import ANSWER
from tests.agents.test_chat import post, signed_in_as, start

_exporter = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def _otel_sdk():
    # What a deployer's opentelemetry-instrument does: a global provider (settable once per process).
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_exporter))
    otel.set_tracer_provider(provider)
    yield


@pytest.fixture
def conversation(client, world, catalogue, runtime, eager):
    signed_in_as(client, world.a.member)
    return start(client, world.a, catalogue.helpdesk)


@pytest.fixture
def exported():
    _exporter.clear()
    yield _exporter
    _exporter.clear()


def test_a_turn_keeps_its_steps_and_emits_them_with_the_tenants_attributes(
    client, world, conversation, exported, django_capture_on_commit_callbacks
):
    post(client, world.a, conversation, "How long is the refund window?", django_capture_on_commit_callbacks)

    with tenant_context(world.a.tenant):
        invocation = Invocation.objects.get()
    names = [span["name"] for span in invocation.trace]
    assert names == [
        "turn.checks",
        "turn.admit",
        "turn.guardrails.input",
        "turn.queue_wait",
        "turn.claim",
        "turn.runtime",
        "turn.guardrails.output",
    ]
    assert invocation.trace[0]["attrs"] == {"agent": "helpdesk", "model": "offline-small", "route": "agent"}
    assert invocation.trace[2]["attrs"]["blocked"] is False
    runtime = invocation.trace[5]
    assert runtime["attrs"]["first_token_ms"] >= 0 and runtime["attrs"]["deltas"] == len(ANSWER)
    assert all(span["ms"] >= 0 for span in invocation.trace)
    rows = timeline(invocation.trace)
    assert [row["name"] for row in rows] == names  # in the order they happened
    assert rows[0]["offset_pct"] == 0 and all(0 <= row["offset_pct"] <= 100 for row in rows)

    emitted = exported.get_finished_spans()
    assert [span.name for span in emitted] == names
    for span in emitted:
        assert span.attributes["tenant.id"] == str(world.a.tenant.pk)
        assert span.attributes["tenant.tier"] == world.a.tenant.tier.slug
    # The web request's spans come before the invocation exists; the worker's name it.
    assert {span.attributes.get("invocation.id") for span in emitted[3:]} == {str(invocation.pk)}
    for span in emitted:
        assert "refund" not in str(dict(span.attributes)).lower()  # never message text
        assert span.end_time >= span.start_time

"""The trace of one chat turn: every step a span with the tenant's attributes.

ARCHITECTURE.md §5 step 5. Each step of a turn (admission, input guardrails,
queue wait, claim, act-on-behalf token, the runtime call up to its first token
and to its end, output guardrails, finishing) is timed here and

* kept on the invocation (`Invocation.trace`), so the portal can always show
  it, with no tracing backend: the chat's "Details" under an answer;
* emitted as an OpenTelemetry span when the process has an SDK configured
  (e.g. `opentelemetry-instrument` with an OTLP exporter). The portal depends
  on the API only, which is a no-op until a deployer configures an SDK.

Spans carry `tenant.id`, `tenant.tier`, `tenant.deployment_model` and
`invocation.id`, never message text.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace as otel

_tracer = otel.get_tracer("tenant-portal.agents")

MAX_SPANS = 40  # a trace is a summary, not a log: retries cannot grow it without bound


class TurnTrace:
    """Spans of one side of a turn (the web request, or the worker's run)."""

    def __init__(self, tenant, *, invocation_id=None, spans: list[dict] | None = None):
        self.attributes = {
            "tenant.id": str(tenant.pk),
            "tenant.tier": tenant.tier.slug,
            "tenant.deployment_model": tenant.deployment_model,
        }
        if invocation_id is not None:
            self.attributes["invocation.id"] = str(invocation_id)
        self.spans: list[dict] = list(spans or [])

    def bind(self, invocation_id) -> None:
        """The invocation exists now: later spans, and the stored trace, name it."""
        self.attributes["invocation.id"] = str(invocation_id)

    @contextmanager
    def span(self, name: str, **attributes) -> Iterator[dict]:
        """Time a step; the yielded dict takes attributes learnt during it."""
        extra: dict = dict(attributes)
        started_wall = time.time()
        started = time.perf_counter()
        with _tracer.start_as_current_span(name, attributes={**self.attributes, **_otel(extra)}) as otel_span:
            try:
                yield extra
            finally:
                for key, value in _otel(extra).items():
                    otel_span.set_attribute(key, value)
                self._keep(name, started_wall, time.perf_counter() - started, extra)

    def add(self, name: str, started_at: float, seconds: float, attributes: dict | None = None) -> None:
        """Record a step timed elsewhere (e.g. the queue wait, known from timestamps)."""
        start_ns = int(started_at * 1e9)
        otel_span = _tracer.start_span(
            name, attributes={**self.attributes, **_otel(attributes or {})}, start_time=start_ns
        )
        otel_span.end(end_time=start_ns + int(max(seconds, 0) * 1e9))
        self._keep(name, started_at, seconds, attributes)

    def _keep(self, name: str, started_at: float, seconds: float, attributes: dict | None) -> None:
        if len(self.spans) >= MAX_SPANS:
            return
        self.spans.append(
            {
                "name": name,
                "at": round(started_at, 4),
                "ms": round(seconds * 1000, 3),
                **({"attrs": _json(attributes)} if attributes else {}),
            }
        )


def _otel(attributes: dict) -> dict:
    """OpenTelemetry takes str, bool, int and float values only."""
    return {
        f"turn.{k}" if "." not in k else k: v for k, v in attributes.items() if isinstance(v, str | bool | int | float)
    }


def _json(attributes: dict) -> dict:
    return {k: v for k, v in attributes.items() if isinstance(v, str | bool | int | float) or v is None}


def timeline(spans: list[dict]) -> list[dict]:
    """Spans laid out for display: offset from the first one and share of the whole, in order."""
    rows = sorted((s for s in spans or [] if isinstance(s, dict) and "at" in s), key=lambda s: s["at"])
    if not rows:
        return []
    start = rows[0]["at"]
    end = max(s["at"] + s.get("ms", 0) / 1000 for s in rows)
    total = max(end - start, 1e-6)
    return [
        {
            "name": s["name"],
            "ms": s.get("ms", 0),
            "offset_pct": round((s["at"] - start) / total * 100, 2),
            "width_pct": max(round(s.get("ms", 0) / 1000 / total * 100, 2), 0.4),
            "attrs": s.get("attrs", {}),
        }
        for s in rows
    ]

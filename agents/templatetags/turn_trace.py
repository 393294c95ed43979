"""`{{ invocation.trace|timeline }}`: a turn's spans laid out for the details under an answer."""

from django import template

from agents import tracing

register = template.Library()

# What each step is called on the page.
LABELS = {
    "turn.checks": "Access and model",
    "turn.admit": "Limits and budget",
    "turn.guardrails.input": "Input guardrails",
    "turn.queue_wait": "Waiting in the queue",
    "turn.claim": "Picked up by a worker",
    "turn.prepare": "Token and request",
    "turn.runtime": "Agent runtime",
    "turn.guardrails.output": "Output guardrails",
}


@register.filter
def timeline(spans):
    rows = tracing.timeline(spans if isinstance(spans, list) else [])
    for row in rows:
        row["label"] = LABELS.get(row["name"], row["name"])
    return rows

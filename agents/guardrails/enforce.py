"""The three enforcement points of a chat turn (input, output, retrieved context).

agents.services.post_message calls `screen_input()` before anything is written;
agents.turns.run feeds the streamed answer to an `OutputGuard`. The guardrails
issue fills these in with the tenant's effective policy.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InputVerdict:
    text: str  # what may be stored and sent on (redacted where the policy says so)
    blocked: bool = False
    message: str = ""  # shown to the person when blocked

    def record(self, invocation) -> None:
        """Write this verdict's events against the turn (same transaction as the turn)."""


def screen_input(tenant, user, text: str) -> InputVerdict:
    return InputVerdict(text=text)


@dataclass(frozen=True)
class OutputVerdict:
    text: str  # the enforced answer (what is stored and, on a violation, shown instead)
    blocked: bool = False
    message: str = ""


class OutputGuard:
    """Checks the answer as it streams: `check()` on each window, `final()` at the end."""

    def __init__(self, tenant, invocation):
        self.tenant = tenant
        self.invocation = invocation
        self.checks = 0  # guardrail checks run for this turn (metered on the usage event)

    def check(self, text_so_far: str) -> OutputVerdict | None:
        """None while the streamed text is acceptable; a verdict stops the stream."""
        return None

    def final(self, text: str) -> OutputVerdict:
        return OutputVerdict(text=text)


def screen_retrieved(tenant, passages: list[dict]) -> list[dict]:
    """Indirect prompt injection: retrieved passages and tool results are screened
    before they reach the model. Each passage dict has at least "text"; the result
    is the same list with `"flagged": True` and a "flag_reason" on suspicious ones
    (whose text is neutralised) — never a passage of another tenant added."""
    return passages

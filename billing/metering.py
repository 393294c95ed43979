"""Recording what a turn used: the one usage event per invocation.

`record_turn()` is called by agents.turns._finish inside the transaction that
writes the turn's final status, so the event and the status commit together
(a crashed worker loses neither; a redelivered task cannot bill twice: the
event is unique per (invocation, kind)).
"""

from __future__ import annotations

import logging
from decimal import Decimal

from django.db import IntegrityError, transaction

from billing.models import UsageEvent, UsageKind

log = logging.getLogger(__name__)


def turn_cost(offering, input_tokens: int, output_tokens: int) -> Decimal:
    if offering is None:
        return Decimal("0")
    return (
        offering.price_per_1k_input * Decimal(input_tokens) / 1000
        + offering.price_per_1k_output * Decimal(output_tokens) / 1000
    ).quantize(Decimal("0.00000001"))


def record_turn(
    invocation,
    *,
    outcome: str,
    offering,
    input_tokens: int,
    output_tokens: int,
    tool_calls: int,
    runtime_seconds: Decimal,
    estimated: bool,
    guardrail_checks: int = 0,
) -> UsageEvent | None:
    """Write the invocation's usage event; None if it was already recorded."""
    try:
        with transaction.atomic():
            event = UsageEvent(
                invocation_id=invocation.pk,
                kind=UsageKind.AGENT_TURN,
                user_id=invocation.user_id,
                agent_slug=invocation.agent.slug,
                model_key=invocation.model_key,
                outcome=outcome,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                tool_calls=tool_calls,
                runtime_seconds=runtime_seconds,
                cost=turn_cost(offering, input_tokens, output_tokens),
                estimated=estimated,
            )
            event.save(force_insert=True)
            return event
    except IntegrityError:
        log.info("turn %s: usage already recorded", invocation.pk)
        return None

"""Usage data for dashboard and invoice tests: raw events written with the roll-up the
metering writes for them (billing.metering.upsert_add with the same increments), on any day."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from decimal import Decimal

from django.utils import timezone

from billing import metering
from billing.models import LimitKind, ThrottleEvent, UsageDaily, UsageEvent
from tenants.context import tenant_context

_seq = itertools.count(1)


def record_usage(
    tenant,
    when: dt.datetime,
    *,
    user=None,
    model: str = "offline-small",
    agent: str = "helpdesk",
    input_tokens: int = 1000,
    output_tokens: int = 500,
    cost: str | Decimal = "0.01",
    latency_ms: int | None = 800,
    outcome: str = "done",
    tool_calls: int = 0,
) -> UsageEvent:
    """One usage event at `when`, rolled up as the metering does it."""
    with tenant_context(tenant):
        event = UsageEvent(
            invocation_id=uuid.uuid4(),
            user_id=user.pk if user is not None else None,
            agent_slug=agent,
            model_key=model,
            outcome=outcome,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            tool_calls=tool_calls,
            latency_ms=latency_ms,
            cost=Decimal(cost),
            created_at=when,
        )
        event.save(force_insert=True)
        metering.upsert_add(
            UsageDaily,
            {
                "tenant": tenant.pk,
                "day": when.astimezone(dt.UTC).date(),
                "model_key": model,
                "agent_slug": agent,
                "user_key": event.user_id or 0,
            },
            metering._daily_increments(
                outcome=outcome,
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                tool_calls=tool_calls,
                runtime_seconds=Decimal("0"),
                guardrail_checks=0,
                cost=Decimal(cost),
                estimated=False,
                latency_ms=latency_ms,
            ),
        )
        return event


def record_throttle(
    tenant, when: dt.datetime, *, user=None, kind: str = LimitKind.RPM, agent="helpdesk", model="offline-small"
):
    with tenant_context(tenant):
        ThrottleEvent.objects.create(
            user_id=user.pk if user is not None else None,
            kind=kind,
            status=402 if kind in (LimitKind.QUOTA, LimitKind.BUDGET) else 429,
            agent_slug=agent,
            model_key=model,
            created_at=when,
        )
        metering.upsert_add(
            UsageDaily,
            {
                "tenant": tenant.pk,
                "day": when.astimezone(dt.UTC).date(),
                "model_key": model,
                "agent_slug": agent,
                "user_key": user.pk if user is not None else 0,
            },
            {"throttled_requests": 1},
        )


def at(day: dt.date, hour: int = 12) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC)


def today() -> dt.date:
    """The UTC date the dashboards call today, read when a test runs. A module-level date is
    read at collection: in a run that crosses midnight it names yesterday by the time the
    test runs, and the test fails for the hour of day it ran at."""
    return timezone.now().astimezone(dt.UTC).date()

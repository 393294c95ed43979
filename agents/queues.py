"""The Celery queues turns wait in: what waits in each, and which workers take it.

Turns go to their tenant's queue (Tenant.bindings: the tier's queue, or a queue of the
tenant's own), and a worker reads only the queues it was started with (README,
"Workers"). A queue that no worker reads keeps its turns queued until the sweeper fails
them, and a tier queue served by the same worker as every other tier isolates nothing:
neither shows anywhere but here. The operator's Load page shows this overview.

Two sources, so one can be read without the other:

* `queue_rows()`: the database's view, every queue a turn can be sent to now (each
  tier's, each dedicated tenant's) plus any queue unfinished turns still sit in, with
  how many turns wait and run there and how long the oldest has waited. Cross-tenant:
  call inside all_tenants() (the operator console).
* `queue_consumers()`: the workers that answer Celery's remote control, by queue. One
  broadcast that waits CONSUMER_PROBE_SECONDS for the answers, so the page loads it on
  its own (htmx) after it has rendered.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from django.db.models import Count, Min, Q
from django.utils import timezone

from agents.models import Invocation, MessageStatus
from tenants.models import Tenant, Tier

log = logging.getLogger(__name__)

CONSUMER_PROBE_SECONDS = 1.0
# A queued turn older than this on a queue is a backlog worth a warning (a turn normally
# starts within milliseconds; a busy worker takes seconds).
STUCK_AFTER = dt.timedelta(seconds=30)


@dataclass
class QueueRow:
    name: str
    tiers: list[str] = field(default_factory=list)  # tiers whose tenants share it
    tenants: list[str] = field(default_factory=list)  # tenants for which it is their own
    queued: int = 0
    running: int = 0
    oldest_queued_at: dt.datetime | None = None
    workers: list[str] | None = None  # None: not known (see queue_consumers)
    state: str = "unknown"  # ok | idle | stuck | unserved | unknown (queue_rows sets it)
    waited: dt.timedelta | None = None  # how long the oldest queued turn has waited

    @property
    def waited_text(self) -> str:
        if self.waited is None:
            return ""
        seconds = max(0, int(self.waited.total_seconds()))
        if seconds < 60:
            return f"{seconds} s"
        if seconds < 3600:
            return f"{seconds // 60} min {seconds % 60} s"
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"

    @property
    def routed(self) -> bool:
        """Whether any turn is sent here now (else it only holds turns sent before a change)."""
        return bool(self.tiers or self.tenants)

    def _state(self) -> str:
        if self.workers == []:
            return "unserved" if (self.queued or self.routed) else "idle"
        if self.waited is not None and self.waited > STUCK_AFTER:
            return "stuck"
        if self.workers is None:
            return "unknown"
        return "ok" if (self.queued or self.running) else "idle"


def queue_rows(consumers: dict[str, list[str]] | None = None, now: dt.datetime | None = None) -> list[QueueRow]:
    """Every queue in use, the ones turns are sent to first. `consumers`: queue_consumers()'s
    answer, if asked (None: which workers read them is not known)."""
    now = now or timezone.now()
    rows: dict[str, QueueRow] = {}

    def row(name: str) -> QueueRow:
        return rows.setdefault(name, QueueRow(name))

    for tier in Tier.objects.only("name", "celery_queue").order_by("name"):
        row(tier.celery_queue).tiers.append(tier.name)
    for tenant in Tenant.objects.select_related("tier").order_by("name"):
        bindings = tenant.bindings
        if bindings.dedicated_queue:
            row(bindings.celery_queue).tenants.append(tenant.name)
    unfinished = (
        Invocation.unscoped.filter(finished_at__isnull=True)  # the invocation_finished_at index
        .values("queue")
        .annotate(
            queued=Count("pk", filter=Q(status=MessageStatus.QUEUED)),
            running=Count("pk", filter=Q(status__in=[MessageStatus.RUNNING, MessageStatus.STREAMING])),
            oldest=Min("queued_at", filter=Q(status=MessageStatus.QUEUED)),
        )
    )
    for counts in unfinished:
        if not counts["queue"]:
            continue
        queue = row(counts["queue"])
        queue.queued, queue.running, queue.oldest_queued_at = counts["queued"], counts["running"], counts["oldest"]
    for queue in rows.values():
        if consumers is not None:
            queue.workers = sorted(consumers.get(queue.name, []))
        queue.waited = now - queue.oldest_queued_at if queue.oldest_queued_at else None
        queue.state = queue._state()
    return sorted(rows.values(), key=lambda q: (not q.routed, q.name))


def workers_reading_several(rows: list[QueueRow]) -> dict[str, list[str]]:
    """{worker: [queues]} for each worker that reads more than one of the queues turns are
    sent to: the tenants of those queues share its processes, so a backlog on one delays
    the others (README, "Workers": one worker per queue keeps tiers apart)."""
    reads: dict[str, list[str]] = {}
    for row in rows:
        if row.routed:
            for worker in row.workers or []:
                reads.setdefault(worker, []).append(row.name)
    return {worker: queues for worker, queues in sorted(reads.items()) if len(queues) > 1}


def queue_consumers() -> dict[str, list[str]] | None:
    """{queue: [worker host names]} from the workers that answered, or None when that
    cannot be told: the filesystem broker (the embedded default) has no remote control,
    and with no answer at all the broker or every worker may be down."""
    from portal.celery import app

    if str(app.conf.broker_url or "").startswith("filesystem://"):
        return None
    try:
        answers = app.control.inspect(timeout=CONSUMER_PROBE_SECONDS).active_queues()
    except Exception:  # noqa: BLE001 (the broker is down: the page says "not known")
        log.warning("asking the workers for their queues failed", exc_info=True)
        return None
    if not answers:
        return None
    consumers: dict[str, list[str]] = {}
    for worker, queues in answers.items():
        for queue in queues or []:
            consumers.setdefault(queue.get("name", ""), []).append(worker)
    return consumers

"""How many turns each tenant had in progress at once: the peak over a window.

A turn is in progress from `queued_at` until `finished_at` (or now, while it has not
finished): the same turns admission counts against the tier's concurrent sessions
(billing.limits: queued, running, streaming). The peak is a sweep over the window's
start and end events, done by the database with one window function (SQLite ≥ 3.25
and PostgreSQL both have them), so only one row per tenant comes back.

The turns read are those that finished inside the window or have not finished
(`agents_invocation_finished_at`), never the tenant's whole history.
"""

from __future__ import annotations

import datetime as dt

from portal.db import sql

# +1 when a turn starts (clamped to the window's start), −1 when it ends; at the same
# instant an end sorts before a start, so back-to-back turns never count as overlapping.
_PEAK_SQL = """
SELECT tenant_id, MAX(level) FROM (
    SELECT tenant_id,
           SUM(delta) OVER (
               PARTITION BY tenant_id ORDER BY at, delta ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
           ) AS level
    FROM (
        SELECT tenant_id, CASE WHEN queued_at < %s THEN %s ELSE queued_at END AS at, 1 AS delta
        FROM agents_invocation
        WHERE (finished_at > %s OR finished_at IS NULL) AND queued_at < %s
        UNION ALL
        SELECT tenant_id, finished_at AS at, -1 AS delta
        FROM agents_invocation
        WHERE finished_at > %s AND finished_at < %s AND queued_at < %s
    ) AS edges
) AS levels
GROUP BY tenant_id
"""


def peak_concurrent_turns(start: dt.datetime, end: dt.datetime) -> dict[int, int]:
    """{tenant id: the most turns it had in progress at once between start and end}, for
    every tenant with a turn in progress then. Cross-tenant: call inside all_tenants()."""
    s, e = sql.dt(start), sql.dt(end)
    rows = sql.all_rows(_PEAK_SQL, [s, s, s, e, s, e, e])
    return {int(tenant_id): int(peak or 0) for tenant_id, peak in rows}

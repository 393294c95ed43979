"""Admission of a turn before it is queued (ARCHITECTURE.md §5 step 1, §7).

`admit()` runs inside post_message's transaction, after the membership,
entitlement and busy checks and before anything is written. It enforces the
tenant's rate limits (RPM/TPM/concurrency), monthly token quota, monthly budget
and per-user limits atomically across processes, and returns an Admission that
holds the turn's reservation; `Admission.attach()` binds the reservation to the
invocation once it exists, and billing.metering settles it with the real usage.

Refusals raise LimitExceeded (a ServiceError), carrying the HTTP status (429
for rate limits, 402 for quota/budget) and Retry-After seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from tenants.services import ServiceError


class LimitExceeded(ServiceError):
    """A turn refused by a limit: shown to the person, 429/402 in the API."""

    def __init__(self, message: str, *, status: int = 429, retry_after: int | None = None, code: str = "rate_limited"):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.code = code


@dataclass
class Admission:
    """What admit() reserved for one turn (nothing yet: the metering issue fills this in)."""

    def attach(self, invocation) -> None:
        """Bind the reservation to the invocation that now exists (same transaction)."""

    def release(self) -> None:
        """Give the reservation back (the turn was blocked before it ran)."""


def admit(tenant, user, offering, text: str) -> Admission:
    return Admission()

"""The tenant context: one contextvar, set in few places, always reset.

Where it is set:
* `TenantMiddleware` for `/t/<slug>/...` browser requests;
* `TenantScopedAPIMixin` for API requests;
* `@tenant_task` for Celery tasks;
* `tenant_context()` for management commands and tests.

Reading tenant-owned data with no tenant set raises `TenantNotSet` (fail
closed). Reading across tenants needs `all_tenants(reason)`, which is explicit,
greppable and, on PostgreSQL, the only way past row-level security.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tenants.models import Tenant


class TenantNotSet(RuntimeError):
    """Tenant-owned data was touched with no tenant in the context."""


@dataclass(frozen=True)
class Scope:
    tenant: Tenant | None = None
    # The signed-in user, so that they can see their own memberships in every
    # tenant (the tenant switcher) and nothing else of other tenants.
    user_id: int | None = None
    # Set only by all_tenants(): operator console, billing roll-ups.
    all_tenants: bool = False
    reason: str = ""

    @property
    def tenant_id(self) -> int | None:
        return self.tenant.pk if self.tenant is not None else None


# Scope is a frozen dataclass, so sharing one default instance is safe.
_scope: contextvars.ContextVar[Scope] = contextvars.ContextVar("tenant_scope", default=Scope())  # noqa: B039


def current_scope() -> Scope:
    return _scope.get()


def current_tenant() -> Tenant | None:
    return _scope.get().tenant


def require_tenant() -> Tenant:
    tenant = _scope.get().tenant
    if tenant is None:
        raise TenantNotSet("This needs a tenant in the context (tenant_context / middleware / @tenant_task).")
    return tenant


@contextmanager
def _using(scope: Scope) -> Iterator[Scope]:
    token = _scope.set(scope)
    try:
        yield scope
    finally:
        _scope.reset(token)


@contextmanager
def tenant_context(tenant: Tenant, *, user_id: int | None = None) -> Iterator[Tenant]:
    """Run the block as `tenant`. The user id, if given, is the acting user."""
    if tenant is None or tenant.pk is None:
        raise TenantNotSet("tenant_context() needs a saved tenant")
    with _using(Scope(tenant=tenant, user_id=user_id if user_id is not None else _scope.get().user_id)):
        yield tenant


@contextmanager
def user_context(user_id: int | None) -> Iterator[None]:
    """No tenant, but the user may read their own memberships (home page, switcher)."""
    with _using(Scope(user_id=user_id)):
        yield


@contextmanager
def no_tenant() -> Iterator[None]:
    """Explicitly clear the context, e.g. around code that must not see any tenant."""
    with _using(Scope()):
        yield


@contextmanager
def all_tenants(reason: str) -> Iterator[None]:
    """Cross-tenant access for the operator console and billing roll-ups only.

    Use the models' `unscoped` manager inside; the default managers still raise,
    so code written for one tenant cannot silently widen.
    """
    if not reason:
        raise ValueError("all_tenants() needs a reason, for the reviewer and the audit log")
    with _using(Scope(user_id=_scope.get().user_id, all_tenants=True, reason=reason)):
        yield


def rls_settings() -> tuple[str, str, str]:
    """The values the PostgreSQL backend puts into app.tenant_id / app.user_id / app.all_tenants."""
    scope = _scope.get()
    return (
        str(scope.tenant_id) if scope.tenant_id is not None else "",
        str(scope.user_id) if scope.user_id is not None else "",
        "on" if scope.all_tenants else "",
    )

"""Ending the browser sessions of people who lost their last tenant.

Tokens need nothing of this: tenants.identity.tokens.validate re-reads the
membership and the tenant's status on every call, and TenantMiddleware refuses a
removed member on their next request. But someone removed from their only
tenant has no business staying signed in, so their sessions end at once.
allauth.usersessions knows each user's sessions (UserSessionsMiddleware records
them), so nothing scans the session table.

A suspended tenant is not a lost one: its members stay signed in, TenantMiddleware
shows them the suspended page (name and reason) on every request, and they carry
on without signing in again once it is reactivated.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from tenants.context import user_context
from tenants.models import Membership, User

log = logging.getLogger(__name__)


def has_membership(user: User) -> bool:
    """A member of some tenant, active or suspended."""
    with user_context(user.pk):
        return Membership.of_user(user).exists()


def end_sessions_of_users_left_without_a_tenant(user_ids: Iterable[int]) -> int:
    """End every session of those users who belong to no tenant any more.

    Operators (staff) keep theirs: the operator console needs no tenant.
    Call it inside the transaction that removed the membership: with database
    sessions (the default) both commit or roll back together. Returns how many
    sessions were ended.
    """
    from allauth.usersessions.models import UserSession

    ended = 0
    for user in User.objects.filter(pk__in=list(user_ids), is_staff=False):
        if has_membership(user):
            continue
        sessions = list(UserSession.objects.filter(user=user))
        for session in sessions:
            session.end()
        ended += len(sessions)
        log.info("ended %s session(s) of user %s: no tenant left", len(sessions), user.pk)
    return ended

"""Access helpers: look up what a URL names, answering 404 for missing and foreign alike.

They go through the tenant-scoped managers, so an id from another tenant is
simply not found; they are the only way views and the API fetch by user input.
"""

from __future__ import annotations

from django.http import Http404

from tenants.models import Invitation, Membership


def int_or_404(value) -> int:
    # Only plain ASCII digits name a row: int() also accepts " 1", "1_0" and a full-width "１".
    text = str(value)
    if not (text.isascii() and text.isdigit()):
        raise Http404
    number = int(text)
    if not 0 < number < 2**63:
        raise Http404
    return number


def access_membership(membership_id) -> Membership:
    membership = Membership.objects.select_related("user").filter(pk=int_or_404(membership_id)).first()
    if membership is None:
        raise Http404("No such member")
    return membership


def access_invitation(invitation_id) -> Invitation:
    invitation = Invitation.objects.select_related("invited_by").filter(pk=int_or_404(invitation_id)).first()
    if invitation is None:
        raise Http404("No such invitation")
    return invitation

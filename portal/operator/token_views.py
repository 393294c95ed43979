"""The operator console's API tokens page: each staff member's own operator API tokens
(tenants.identity.operator_tokens): list, create (the token is shown once), revoke.

A staff member sees and revokes only their own tokens, superusers included: a token is a
personal credential, and the one thing another operator could need to do with it, stop
it, happens by itself when its owner stops being active staff (checked on every request).
"""

from __future__ import annotations

from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from portal.operator.forms import OperatorTokenForm
from portal.operator.views import operator_view
from tenants.audit import client_ip
from tenants.identity import operator_tokens
from tenants.services import ServiceError


def _page(request, form=None, status=200):
    tokens = list(operator_tokens.tokens_of(request.user))
    context = {
        "tokens": tokens,
        "form": form or OperatorTokenForm(),
        "scope_labels": operator_tokens.SCOPES,
        "api_root": request.build_absolute_uri("/api/v1/operator/"),
    }
    return render(request, "operator/api_tokens.html", context, status=status)


@operator_view
def api_tokens(request):
    return _page(request)


@never_cache
@require_POST
@operator_view
def api_token_create(request):
    form = OperatorTokenForm(request.POST)
    if form.is_valid():
        try:
            token, raw = operator_tokens.create(
                request.user,
                name=form.cleaned_data["name"],
                scopes=form.cleaned_data["scopes"],
                days=form.cleaned_data["days"],
                ip=client_ip(request),
            )
        except ServiceError as exc:
            form.add_error(None, exc)
        else:
            context = {
                "token": token,
                "raw": raw,
                "api_root": request.build_absolute_uri("/api/v1/operator/"),
                "done_url": reverse("operator:api_tokens"),
            }
            return render(request, "operator/api_token_secret.html", context)
    return _page(request, form=form, status=400)


@require_POST
@operator_view
def api_token_revoke(request, token_id):
    try:
        token = operator_tokens.revoke(request.user, token_id, ip=client_ip(request))
    except ServiceError as exc:
        messages.error(request, exc.text)
    else:
        messages.success(request, f"{token.name} is revoked: it stopped working at once.")
    return redirect("operator:api_tokens")

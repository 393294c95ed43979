"""`{% turn_stream_url invocation %}`: the SSE URL the chat page follows for a turn, with its
stream token, so the browser's stream skips Django like an API client's (agents.views)."""

from django import template
from django.urls import reverse

from agents.views import stream_url

register = template.Library()


@register.simple_tag(takes_context=True)
def turn_stream_url(context, invocation) -> str:
    request = context["request"]
    path = reverse("agents:turn_events", kwargs={"tenant_slug": request.tenant.slug, "invocation_id": invocation.pk})
    return stream_url(path, request.tenant, invocation.pk, request.user.pk)

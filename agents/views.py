"""Chat screens and the Server-Sent Events stream of a turn.

Views are thin: parse → access (the caller's own conversations, in the tenant
the middleware set) → service → render. The SSE view is async so that a web
process holds many open streams without a thread each; it sets the tenant
context itself, because a streamed body is produced after the middleware
(and its context) has returned.
"""

from __future__ import annotations

import asyncio
import time

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.db import connections
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from agents import markdown, services, streaming
from agents.models import FINAL_STATUSES, Conversation, Invocation, Message
from tenants.access import int_or_404
from tenants.context import tenant_context
from tenants.roles import Action
from tenants.services import Actor, ServiceError
from tenants.views import tenant_view

STREAM_MAX_SECONDS = 300  # a browser reconnects (Last-Event-ID) after this
STREAM_KEEPALIVE_SECONDS = 15
STREAM_POLL_MS = 1000
# How often a quiet stream asks the database whether its turn still exists. Once per
# empty poll (every second) made 500 idle streams cost a web process a whole core and
# delay deliveries by over a second (`make bench`); events themselves need no query.
STREAM_STATUS_CHECK_SECONDS = 15


def _conversation_or_404(request, conversation_id) -> Conversation:
    conversation = services.access_conversation(Actor.from_request(request), conversation_id)
    if conversation is None:
        raise Http404("No such conversation")
    return conversation


def _invocation_or_404(request, invocation_id) -> Invocation:
    invocation = Invocation.objects.select_related("conversation").filter(pk=_uuid_or_404(invocation_id)).first()
    if invocation is None or invocation.user_id != request.user.pk:
        raise Http404("No such turn")
    return invocation


def _uuid_or_404(value):
    import uuid

    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise Http404


def _message_rows(conversation: Conversation) -> list[dict]:
    rows = []
    # Oldest first, so that an answer that was retried maps to its latest invocation.
    turns = Invocation.objects.filter(conversation=conversation).order_by("queued_at")
    invocations = {inv.assistant_message_id: inv for inv in turns}
    for message in Message.objects.filter(conversation=conversation).order_by("created_at", "id"):
        rows.append(
            {
                "message": message,
                "html": markdown.render(message.content) if message.role == Message.Role.ASSISTANT else "",
                "invocation": invocations.get(message.pk),
            }
        )
    return rows


@tenant_view(Action.USE_AGENTS)
def chat_home(request):
    conversations = Conversation.objects.filter(user=request.user).select_related("agent")[:100]
    agents = services.agents_for_members(request.tenant)
    return render(request, "agents/chat_home.html", {"conversations": conversations, "agents": agents})


@require_POST
@tenant_view(Action.USE_AGENTS)
def conversation_new(request):
    try:
        conversation = services.start_conversation(Actor.from_request(request), request.POST.get("agent", ""))
    except ServiceError as exc:
        messages.error(request, exc.text)
        return redirect("agents:chat", tenant_slug=request.tenant.slug)
    return redirect("agents:conversation", tenant_slug=request.tenant.slug, conversation_id=conversation.pk)


@tenant_view(Action.USE_AGENTS)
def conversation_detail(request, conversation_id):
    conversation = _conversation_or_404(request, conversation_id)
    rows = _message_rows(conversation)
    active = next(
        (r["invocation"] for r in reversed(rows) if r["invocation"] and r["invocation"].status not in FINAL_STATUSES),
        None,
    )
    context = {
        "conversation": conversation,
        "rows": rows,
        "active": active,
        "conversations": Conversation.objects.filter(user=request.user).select_related("agent")[:100],
        "max_chars": services.MAX_MESSAGE_CHARS,
    }
    return render(request, "agents/conversation.html", context)


@require_POST
@tenant_view(Action.USE_AGENTS)
def message_post(request, conversation_id):
    conversation = _conversation_or_404(request, conversation_id)
    try:
        invocation = services.post_message(Actor.from_request(request), conversation, request.POST.get("text", ""))
    except ServiceError as exc:
        error = exc.text
        if request.htmx:
            # A limit answers 429/402 with Retry-After (billing.limits.LimitExceeded); other refusals 400.
            status = getattr(exc, "status", 400)
            response = render(request, "agents/_composer_error.html", {"error": error}, status=status)
            if getattr(exc, "retry_after", None):
                response["Retry-After"] = str(exc.retry_after)
            return response
        messages.error(request, error)
        return redirect("agents:conversation", tenant_slug=request.tenant.slug, conversation_id=conversation.pk)
    if request.htmx:
        context = {
            "user_message": invocation.user_message,
            "assistant": invocation.assistant_message,
            "invocation": invocation,
        }
        return render(request, "agents/_turn.html", context, status=202)
    return redirect("agents:conversation", tenant_slug=request.tenant.slug, conversation_id=conversation.pk)


@require_POST
@tenant_view(Action.USE_AGENTS)
def turn_cancel(request, invocation_id):
    invocation = _invocation_or_404(request, invocation_id)
    try:
        services.cancel_turn(Actor.from_request(request), invocation)
    except ServiceError as exc:
        messages.error(request, exc.text)
    if request.htmx:
        return render(request, "agents/_empty.html", status=202)
    return redirect("agents:conversation", tenant_slug=request.tenant.slug, conversation_id=invocation.conversation_id)


@require_POST
@tenant_view(Action.USE_AGENTS)
def turn_retry(request, invocation_id):
    invocation = _invocation_or_404(request, invocation_id)
    try:
        services.retry_turn(Actor.from_request(request), invocation)
    except ServiceError as exc:
        messages.error(request, exc.text)
    return redirect("agents:conversation", tenant_slug=request.tenant.slug, conversation_id=invocation.conversation_id)


@require_POST
@tenant_view(Action.USE_AGENTS)
def message_feedback(request, message_id):
    message = Message.objects.filter(pk=int_or_404(message_id)).first()
    if message is None or not Conversation.objects.filter(pk=message.conversation_id, user=request.user).exists():
        raise Http404
    try:
        value = int(request.POST.get("value", ""))
        services.set_feedback(Actor.from_request(request), message, value)
    except (ValueError, ServiceError):
        return render(request, "agents/_feedback.html", {"message": message, "error": True}, status=400)
    message.feedback = value
    return render(request, "agents/_feedback.html", {"message": message})


@tenant_view(Action.USE_AGENTS)
def message_fragment(request, message_id):
    """The stored, rendered answer: swapped in when a stream ends."""
    message = Message.objects.filter(pk=int_or_404(message_id)).first()
    if message is None or not Conversation.objects.filter(pk=message.conversation_id, user=request.user).exists():
        raise Http404
    invocation = Invocation.objects.filter(assistant_message=message).first()
    row = {"message": message, "html": markdown.render(message.content), "invocation": invocation}
    return render(request, "agents/_message.html", {"row": row})


# --- Server-Sent Events ------------------------------------------------------------------


def _last_event_id(request) -> int:
    raw = request.headers.get("Last-Event-ID") or request.GET.get("after") or "0"
    try:
        return max(0, min(int(raw), 2**31))
    except ValueError:
        return 0


async def event_stream(tenant, invocation_id, after: int):
    """Yield SSE frames after `after` until a final event, or until the stream's
    time is up (the browser then reconnects with Last-Event-ID)."""
    deadline = time.monotonic() + STREAM_MAX_SECONDS
    last_sent = time.monotonic()
    next_status_check = time.monotonic() + STREAM_STATUS_CHECK_SECONDS
    yield "retry: 1000\n\n"
    with tenant_context(tenant):
        while time.monotonic() < deadline:
            events = await streaming.read_async(invocation_id, after, STREAM_POLL_MS)
            for event in events:
                after = event.seq
                yield event.sse()
                last_sent = time.monotonic()
                if event.is_final:
                    return
            if not events:
                if time.monotonic() >= next_status_check:
                    if await sync_to_async(_status, thread_sensitive=False)(invocation_id) is None:
                        return
                    next_status_check = time.monotonic() + STREAM_STATUS_CHECK_SECONDS
                if time.monotonic() - last_sent >= STREAM_KEEPALIVE_SECONDS:
                    yield ": keep-alive\n\n"
                    last_sent = time.monotonic()
            await asyncio.sleep(0)


def _status(invocation_id):
    return Invocation.objects.filter(pk=invocation_id).values_list("status", flat=True).first()


def _release_db_connections() -> None:
    """Give back this request thread's database connections before a long stream starts.

    The stream itself never uses them (it reads Redis, or queries from other
    threads), yet under ASGI they would stay open until the response ends, up to
    STREAM_MAX_SECONDS: one PostgreSQL connection per open stream, so a few dozen
    browsers exhaust max_connections (found by `make bench`). A connection inside
    a transaction (tests wrap each one in atomic) is left alone."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()


def sse_response(tenant, invocation_id, after: int) -> StreamingHttpResponse:
    _release_db_connections()
    response = StreamingHttpResponse(event_stream(tenant, invocation_id, after), content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # let proxies pass events through at once
    return response


@tenant_view(Action.USE_AGENTS)
def turn_events(request, invocation_id):
    invocation = _invocation_or_404(request, invocation_id)
    return sse_response(request.tenant, invocation.pk, _last_event_id(request))

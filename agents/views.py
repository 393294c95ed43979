"""Chat screens and the Server-Sent Events stream of a turn.

Views are thin: parse → access (the caller's own conversations, in the tenant
the middleware set) → service → render. The SSE view is async so that a web
process holds many open streams without a thread each; it sets the tenant
context itself, because a streamed body is produced after the middleware
(and its context) has returned.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qs

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.core import signing
from django.db import connections
from django.http import Http404, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import Resolver404, resolve
from django.views.decorators.http import require_POST

from agents import markdown, services, streaming
from agents.models import FINAL_STATUSES, Conversation, Invocation, Message
from tenants.access import int_or_404
from tenants.context import tenant_context
from tenants.models import Membership, Tenant
from tenants.roles import Action, can
from tenants.services import Actor, ServiceError
from tenants.views import tenant_view

STREAM_KEEPALIVE_SECONDS = 15
STREAM_POLL_MS = 1000
# How often a quiet stream asks the database whether its turn still exists. Once per
# empty poll (every second) made 500 idle streams cost a web process a whole core and
# delay deliveries by over a second (`make bench`); events themselves need no query.
STREAM_STATUS_CHECK_SECONDS = 15
# How often an open stream, quiet or not, looks whether its tenant's access generation moved
# (agents.streaming.access_changed: a member removed, a role changed, a conversation deleted,
# the tenant suspended)
# and, only then, asks the database whether its reader may still read the turn. So a reader
# whose access ended gets nothing more within about STREAM_ACCESS_CHECK_SECONDS plus one poll
# (STREAM_POLL_MS): about 2 s. Before sending events, so none read after the change go out.
STREAM_ACCESS_CHECK_SECONDS = 1.0
# After sending events, how long a stream waits before reading again (see _frames): at
# most this much later on screen, for ~15% less web CPU per stream with a worker's
# pattern of events (measured: 1.54 ms per stream at 0, 1.30 at 10 ms, 1.25 at 20 ms).
STREAM_COALESCE_SECONDS = 0.01


def _conversation_or_404(request, conversation_id) -> Conversation:
    conversation = services.access_conversation(Actor.from_request(request), conversation_id)
    if conversation is None:
        raise Http404("No such conversation")
    return conversation


def _invocation_or_404(request, invocation_id) -> Invocation:
    invocation = Invocation.objects.select_related("conversation").filter(pk=_uuid_or_404(invocation_id)).first()
    if invocation is None or invocation.user_id != request.user.pk or invocation.conversation.deleted_at is not None:
        raise Http404("No such turn")
    return invocation


def _message_or_404(request, message_id) -> Message:
    """A message of one of the caller's own (not deleted) conversations."""
    message = Message.objects.filter(pk=int_or_404(message_id)).first()
    if message is None or not services.owned_conversations(request.user).filter(pk=message.conversation_id).exists():
        raise Http404("No such message")
    return message


def _uuid_or_404(value):
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
    conversations = services.listed_conversations(request.user).select_related("agent")[:100]
    agents = services.agents_for_members(request.tenant)
    context = {
        "conversations": conversations,
        "agents": agents,
        # With no agent enabled, whoever may enable one is sent where that is done.
        "may_enable_agents": can(request.membership.role, Action.MANAGE_AGENTS),
    }
    return render(request, "agents/chat_home.html", context)


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
    listed = services.listed_conversations(request.user, keeping=conversation).select_related("agent")[:100]
    context = {
        "conversation": conversation,
        "rows": rows,
        "active": active,
        "conversations": listed,
        "max_chars": services.MAX_MESSAGE_CHARS,
        "title_max_chars": services.RENAMED_TITLE_MAX_CHARS,
    }
    return render(request, "agents/conversation.html", context)


def _gone(request, exc: ServiceError):
    """The conversation was deleted (in another tab) while this request ran: its page is
    gone too, so the person lands on the list of conversations, told why."""
    messages.error(request, exc.text)
    return redirect("agents:chat", tenant_slug=request.tenant.slug)


@require_POST
@tenant_view(Action.USE_AGENTS)
def conversation_rename(request, conversation_id):
    conversation = _conversation_or_404(request, conversation_id)
    try:
        services.rename_conversation(Actor.from_request(request), conversation, request.POST.get("title", ""))
    except services.ConversationGone as exc:
        return _gone(request, exc)
    except ServiceError as exc:
        messages.error(request, exc.text)
    else:
        messages.success(request, "Conversation renamed.")
    return redirect("agents:conversation", tenant_slug=request.tenant.slug, conversation_id=conversation.pk)


@require_POST
@tenant_view(Action.USE_AGENTS)
def conversation_delete(request, conversation_id):
    """The page's confirmation panel posts here (see agents/conversation.html)."""
    conversation = _conversation_or_404(request, conversation_id)
    try:
        services.delete_conversation(Actor.from_request(request), conversation)
    except services.ConversationGone as exc:  # deleted in another tab a moment ago: done all the same
        return _gone(request, exc)
    except ServiceError as exc:
        messages.error(request, exc.text)
        return redirect("agents:conversation", tenant_slug=request.tenant.slug, conversation_id=conversation.pk)
    messages.success(request, "Conversation deleted.")
    return redirect("agents:chat", tenant_slug=request.tenant.slug)


@require_POST
@tenant_view(Action.USE_AGENTS)
def message_post(request, conversation_id):
    conversation = _conversation_or_404(request, conversation_id)
    try:
        invocation = services.post_message(Actor.from_request(request), conversation, request.POST.get("text", ""))
    except ServiceError as exc:
        error = exc.text
        if request.htmx:
            # A limit answers 429/402 with Retry-After, 413 without (billing.limits.LimitExceeded); other refusals 400.
            status = getattr(exc, "status", 400)
            response = render(request, "agents/_composer_error.html", {"error": error}, status=status)
            if getattr(exc, "retry_after", None):
                response["Retry-After"] = str(exc.retry_after)
            return response
        if isinstance(exc, services.ConversationGone):
            return _gone(request, exc)
        messages.error(request, error)
        return redirect("agents:conversation", tenant_slug=request.tenant.slug, conversation_id=conversation.pk)
    if request.htmx:
        context = {
            "user_message": invocation.user_message,
            "assistant": invocation.assistant_message,
            "invocation": invocation,
            "conversation": conversation,
            # The first question has just named the conversation: the page shows it at once.
            "new_title": "" if conversation.title else services.conversation_title(invocation.user_message.content),
            "title_max_chars": services.RENAMED_TITLE_MAX_CHARS,
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
    except services.ConversationGone as exc:
        return _gone(request, exc)
    except ServiceError as exc:
        messages.error(request, exc.text)
    return redirect("agents:conversation", tenant_slug=request.tenant.slug, conversation_id=invocation.conversation_id)


@require_POST
@tenant_view(Action.USE_AGENTS)
def message_feedback(request, message_id):
    message = _message_or_404(request, message_id)
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
    message = _message_or_404(request, message_id)
    invocation = Invocation.objects.filter(assistant_message=message).first()
    row = {"message": message, "html": markdown.render(message.content), "invocation": invocation}
    return render(request, "agents/_message.html", {"row": row})


# --- Server-Sent Events ------------------------------------------------------------------
#
# A stream is opened once per turn, so what it costs before its first byte is paid on
# every turn: through Django and DRF (Bearer signature, tenant and membership queries,
# the invocation's lookup, a thread) it was most of the web tier's CPU per turn (`make
# bench`). So the POST that queues a turn answers with a stream_url carrying a *stream
# token*: an HMAC (SECRET_KEY, a salt of its own) over the tenant, the user, the URL's
# tenant slug and invocation id, and the time it was made. A GET of such a URL with a
# valid token is served by portal.asgi straight from the Redis relay
# (`serve_signed_stream`): no middleware, no query, no thread. Anything else (no token,
# a forged, foreign or expired one, another URL, no Redis) goes through Django with full
# authentication, exactly as before, so every 401/403/404 answer stays the same. A token
# lets its holder read that one turn's events for STREAM_TOKEN_SECONDS, no more; a
# stream re-checks tenant, membership and turn whenever it has been quiet for
# STREAM_STATUS_CHECK_SECONDS. A token is also signed over the tenant's access generation
# (agents.streaming.access_changed): once a member is removed or deactivated, a role
# changed, a conversation deleted or the tenant suspended, tokens made before stop opening
# the fast path (a reconnect goes through Django, which checks everything), and open
# streams re-check their reader within STREAM_ACCESS_CHECK_SECONDS.

STREAM_TOKEN_PARAM = "st"
# Longer than a turn may run (RUNTIME_TIMEOUT_SECONDS), short should a URL leak into a log.
# A reconnect after it has expired falls back to the session or Bearer token.
STREAM_TOKEN_SECONDS = 600
_stream_signer = signing.TimestampSigner(salt="agents.views.stream_token")
_STREAM_TOKEN = re.compile(
    r"(?P<tenant>[0-9]{1,18})\.(?P<user>[0-9]{1,18}):(?P<stamp>[0-9A-Za-z]{1,16}):(?P<sig>[-_0-9A-Za-z]{16,128})"
)
# The routes a stream token opens, and the URL kwarg that names the invocation in each.
STREAM_ROUTES = {"api:invocation-events": "pk", "agents:turn_events": "invocation_id"}
# With what SecurityMiddleware and XFrameOptionsMiddleware add to a Django response.
_STREAM_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # let proxies pass events through at once
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


def _signed_value(tenant_id, user_id, slug: str, invocation_id, generation: int) -> str:
    return f"{tenant_id}.{user_id}.{slug}.{invocation_id}.{generation}"


def stream_token(tenant, invocation_id, user_id: int) -> str:
    """Opens the events of one turn of one tenant, for one user, for STREAM_TOKEN_SECONDS,
    or until the tenant's access generation moves on (see the comment above)."""
    generation = streaming.access_generation(tenant.pk)
    signed = _stream_signer.sign(_signed_value(tenant.pk, user_id, tenant.slug, invocation_id, generation))
    _value, stamp, signature = signed.rsplit(":", 2)
    return f"{tenant.pk}.{user_id}:{stamp}:{signature}"


def stream_url(path: str, tenant, invocation_id, user_id: int) -> str:
    return f"{path}?{STREAM_TOKEN_PARAM}={stream_token(tenant, invocation_id, user_id)}"


@dataclass(frozen=True)
class SignedStream:
    tenant_id: int
    user_id: int
    invocation_id: uuid.UUID
    after: int
    generation: int  # the tenant's access generation the token was checked against


def signed_stream(scope: dict) -> SignedStream | None:
    """The turn an ASGI request opens with a valid stream token; None lets Django answer it."""
    query = scope.get("query_string", b"")
    if scope["method"] != "GET" or b"st=" not in query or not streaming.uses_redis():
        return None  # the common case, decided without parsing anything
    path, root = scope["path"], scope.get("root_path", "")
    try:
        match = resolve(path[len(root) :] if root and path.startswith(root) else path)
        kwarg = STREAM_ROUTES[match.view_name]
        invocation_id = uuid.UUID(str(match.kwargs[kwarg]))
    except (Resolver404, KeyError, ValueError):
        return None
    params = parse_qs(query.decode("latin-1"))
    token = _STREAM_TOKEN.fullmatch((params.get(STREAM_TOKEN_PARAM) or [""])[0])
    if token is None:
        return None
    # One Redis GET (on the event loop: well under a millisecond, no thread): a token made
    # before the tenant's access last changed is left to Django.
    generation = streaming.access_generation(token["tenant"])
    value = _signed_value(token["tenant"], token["user"], match.kwargs["tenant_slug"], invocation_id, generation)
    try:
        _stream_signer.unsign(f"{value}:{token['stamp']}:{token['sig']}", max_age=STREAM_TOKEN_SECONDS)
    except signing.BadSignature:  # SignatureExpired too
        return None
    headers = dict(scope.get("headers") or ())
    raw_after = headers.get(b"last-event-id", b"").decode("latin-1") or (params.get("after") or ["0"])[0]
    return SignedStream(int(token["tenant"]), int(token["user"]), invocation_id, _after(raw_after), generation)


async def serve_signed_stream(stream: SignedStream, receive, send) -> None:
    """The turn's events as a raw ASGI response (see the comment at the top of this part)."""
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        await send({"type": "http.response.start", "status": 200, "headers": _STREAM_HEADERS})
        frames = _frames(
            stream.tenant_id,
            stream.invocation_id,
            stream.after,
            user_id=stream.user_id,
            until=gone,
            generation=stream.generation,
        )
        async for frame, last in frames:
            await send({"type": "http.response.body", "body": frame.encode(), "more_body": not last})
            if last:
                return
        if not gone.done():
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        gone.cancel()


async def _disconnected(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _after(raw: str) -> int:
    try:
        return max(0, min(int(raw), 2**31))
    except ValueError:
        return 0


def _last_event_id(request) -> int:
    return _after(request.headers.get("Last-Event-ID") or request.GET.get("after") or "0")


async def event_stream(tenant_id: int, invocation_id, after: int, *, tenant=None, user_id=None):
    """Yield SSE frames after `after` until a final event, or until the stream's time is up
    (the browser then reconnects with Last-Event-ID). Events read together go out as one
    chunk. `tenant` is needed by the database relay only (Redis streams are keyed by
    invocation id)."""
    async for frame, _last in _frames(tenant_id, invocation_id, after, tenant=tenant, user_id=user_id):
        yield frame


async def _frames(tenant_id: int, invocation_id, after: int, *, tenant=None, user_id=None, until=None, generation=None):
    """(frame, whether it is the last) pairs of `event_stream`; also ends when `until` is
    done (the client went away), or when its reader may no longer read the turn (checked
    when the tenant's access generation moves on from `generation`: the one its token was
    checked against, or for a stream Django authenticated, the one when it starts).
    Knowing the last frame lets the ASGI stream send it together with the end of the
    response: one write fewer per turn."""
    deadline = time.monotonic() + settings.SSE_STREAM_MAX_SECONDS  # then the browser reconnects
    last_sent = time.monotonic()
    next_status_check = time.monotonic() + STREAM_STATUS_CHECK_SECONDS
    if generation is None:
        generation = await streaming.access_generation_async(tenant_id)
    next_access_check = time.monotonic() + STREAM_ACCESS_CHECK_SECONDS
    yield "retry: 1000\n\n", False
    while time.monotonic() < deadline and not (until is not None and until.done()):
        if tenant is not None:
            with tenant_context(tenant):
                events = await streaming.read_async(invocation_id, after, STREAM_POLL_MS)
        else:
            events = await streaming.read_async(invocation_id, after, STREAM_POLL_MS)
        if time.monotonic() >= next_access_check:
            current = await streaming.access_generation_async(tenant_id)
            if current != generation:
                state = await sync_to_async(_turn_state, thread_sensitive=False)(tenant_id, user_id, invocation_id)
                if state is None:
                    return  # what was read stays unsent: the browser's reconnect is refused
                generation = current
            next_access_check = time.monotonic() + STREAM_ACCESS_CHECK_SECONDS
        if events:
            final = next((i for i, event in enumerate(events) if event.is_final), None)
            sent = events if final is None else events[: final + 1]
            after = sent[-1].seq
            yield "".join(event.sse() for event in sent), final is not None
            if final is not None:
                return
            last_sent = time.monotonic()
            # A worker writes a turn's events in bursts (the answer, its citations, the final
            # event): a short pause lets the next read take a burst whole, i.e. one Redis
            # round trip and one write to the client instead of one each per event.
            await asyncio.sleep(STREAM_COALESCE_SECONDS)
            continue
        if time.monotonic() >= next_status_check:
            state = await sync_to_async(_turn_state, thread_sensitive=False)(tenant_id, user_id, invocation_id)
            if state is None:
                return
            if state.status in FINAL_STATUSES:
                # The turn has ended, yet its final event never came: the relay lost it (a
                # Redis stream kept for STREAM_TTL_SECONDS, a worker gone between its commit
                # and its publish). The stream ends with the final event the database implies
                # rather than wait out SSE_STREAM_MAX_SECONDS, and a client's reconnect, for ever.
                yield await sync_to_async(_closing_frame, thread_sensitive=False)(tenant, invocation_id, after, state)
                return
            next_status_check = time.monotonic() + STREAM_STATUS_CHECK_SECONDS
        if time.monotonic() - last_sent >= STREAM_KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n", False
            last_sent = time.monotonic()
        await asyncio.sleep(0)


@dataclass(frozen=True)
class TurnState:
    status: str
    message_id: int
    error: str


@streaming.off_request_thread
def _turn_state(tenant_id: int, user_id: int | None, invocation_id) -> TurnState | None:
    """A stream's turn, or None if the stream may not go on: its tenant suspended or gone,
    its reader no longer a member or in a role that may not chat, its turn or its
    conversation gone."""
    tenant = Tenant.objects.filter(pk=tenant_id).first()
    if tenant is None or not tenant.is_active:
        return None
    with tenant_context(tenant):
        if user_id is not None:
            role = Membership.objects.filter(user_id=user_id, user__is_active=True).values_list("role", flat=True)
            if not can(role.first(), Action.USE_AGENTS):
                return None
        row = (
            Invocation.objects.filter(pk=invocation_id, conversation__deleted_at__isnull=True)
            .values_list("status", "assistant_message_id", "error")
            .first()
        )
    return TurnState(*row) if row else None


# The final event a turn's ended state implies (see agents.turns for the events themselves).
_FINAL_EVENT = {"done": "done", "cancelled": "cancelled", "blocked": "blocked", "failed": "error"}


@streaming.off_request_thread
def _closing_frame(tenant, invocation_id, after: int, state: TurnState) -> tuple[str, bool]:
    """The last frame of a stream whose turn has ended: its own final event if it has come
    after all, else the one the database implies, numbered after the last event sent."""
    if tenant is not None:
        with tenant_context(tenant):
            events = streaming.read(invocation_id, after)
    else:
        events = streaming.read(invocation_id, after)
    final = next((i for i, event in enumerate(events) if event.is_final), None)
    if final is not None:
        return "".join(event.sse() for event in events[: final + 1]), True
    data = {"message_id": state.message_id}
    if state.status == "failed":
        data = {"message": state.error or "The answer failed."}
    elif state.status == "blocked":
        data["message"] = state.error
    last = events[-1].seq if events else after
    return "".join(e.sse() for e in events) + streaming.Event(last + 1, _FINAL_EVENT[state.status], data).sse(), True


def _release_db_connections() -> None:
    """Give back this request thread's database connections before a long stream starts.

    The stream itself never uses them (it reads Redis, or queries from other
    threads), yet under ASGI they would stay open until the response ends, up to
    SSE_STREAM_MAX_SECONDS: one PostgreSQL connection per open stream, so a few dozen
    browsers exhaust max_connections (found by `make bench`). A connection inside
    a transaction (tests wrap each one in atomic) is left alone."""
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()


def sse_response(tenant, invocation_id, after: int, user_id: int | None = None) -> StreamingHttpResponse:
    _release_db_connections()
    frames = event_stream(tenant.pk, invocation_id, after, tenant=tenant, user_id=user_id)
    response = StreamingHttpResponse(frames, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # let proxies pass events through at once
    return response


@tenant_view(Action.USE_AGENTS)
def turn_events(request, invocation_id):
    invocation = _invocation_or_404(request, invocation_id)
    return sse_response(request.tenant, invocation.pk, _last_event_id(request), request.user.pk)

"""The ASGI application.

* A turn's event stream opened with a stream token is served straight from the Redis
  relay (agents.views.serve_signed_stream): no middleware, no query, no thread.
* Every other request goes through Django (`DjangoHandler`), whose middleware and views
  are sync, on a thread per request taken from a pool.
"""

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.core.handlers.asgi import ASGIHandler

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")


class DjangoHandler(ASGIHandler):
    """Django's ASGI handler, with the middleware chain and the view run as under WSGI:
    in one go on the request's thread.

    Django's own builds the chain in async mode, so that the sync-only middleware at its
    inner end (TenantMiddleware, allauth's sessions, WhiteNoise) made every request hop
    event loop → thread → event loop (URL resolution) → thread (the view) and back; every
    view and middleware here is sync, so all those hops bought nothing but CPU.
    """

    def load_middleware(self, is_async=False):
        super().load_middleware(is_async=False)

    async def get_response_async(self, request):
        return await sync_to_async(self.get_response, thread_sensitive=True)(request)

    # Django's handler receives the whole body into a spooled file before any middleware
    # runs; on the upload routes a body over the limit is refused unread instead
    # (agents.knowledge.uploads: UploadLimitMiddleware then answers 413).
    async def handle(self, scope, receive, send):
        scope, receive = guard_asgi_body(scope, receive)
        return await super().handle(scope, receive, send)

    async def read_body(self, receive):
        if isinstance(receive, BodyGuard):
            return await receive.read_body()
        return await super().read_body(receive)


def _django_application() -> DjangoHandler:
    import django

    django.setup(set_prefix=False)  # as django.core.asgi.get_asgi_application()
    return DjangoHandler()


django_application = _django_application()

from agents.knowledge.uploads import BodyGuard, guard_asgi_body  # noqa: E402 (needs the app registry)
from agents.views import serve_signed_stream, signed_stream  # noqa: E402 (needs the app registry)

# Django starts (and ends) a thread for each request; here a request takes an idle one
# from this pool instead (as a WSGI server's thread pool does; thread-local state such
# as database connections is handled at request start and finish, as there). That, and
# the handler above, saved ~1 ms of CPU per API request in `make bench`. More threads
# are started when more requests run at once (e.g. streams opened without a stream
# token hold theirs while they last); IDLE_THREADS_KEPT of them stay for later. A
# request whose client left while its view was still running gives its thread back
# busy: the next request on it starts once that view has finished.
IDLE_THREADS_KEPT = 64
_idle: list[ThreadPoolExecutor] = []


# At most this many requests run their view at once; the others wait their turn on the
# event loop, where waiting costs nothing. Python runs one thread at a time, so more
# threads only add switching: under the chat load of `make bench` (48 clients), 6 at
# once took 12.3 ms of web CPU per turn where unbounded threads took 17.0, and served
# 52 turns/s instead of 41. A request stops counting once its response has started, so
# a long-lived response (an event stream opened without a stream token) never holds a
# place. Enough remain for the round trips to overlap: a thread waiting on the
# database lets another run.
WEB_VIEWS_AT_ONCE = int(os.environ.get("WEB_VIEWS_AT_ONCE") or 8)
_views = asyncio.Semaphore(WEB_VIEWS_AT_ONCE)


async def application(scope, receive, send):
    if scope["type"] != "http":
        return await django_application(scope, receive, send)  # Django refuses lifespan, as before
    stream = signed_stream(scope)
    if stream is not None:
        return await serve_signed_stream(stream, receive, send)
    await _views.acquire()
    holding = True

    async def send_releasing(message):
        nonlocal holding
        if holding and message["type"] == "http.response.start":
            holding = False
            _views.release()
        await send(message)

    # One request at a time on each executor: it is the request's one thread (asgiref's rule).
    executor = _idle.pop() if _idle else ThreadPoolExecutor(max_workers=1, thread_name_prefix="request")
    try:
        async with ThreadSensitiveContext(executor=executor):
            return await django_application(scope, receive, send_releasing)
    finally:
        if holding:
            _views.release()
        if len(_idle) < IDLE_THREADS_KEPT:
            _idle.append(executor)
        else:
            executor.shutdown(wait=False)

"""The whole product in real processes, for browser tests of the chat path.

`running_product()` does what `make run` does: `migrate`, `seed_demo`, then
`python -m portal.devserver` (uvicorn and a Celery worker), in a folder of its
own. It only swaps the runtime for a `ScriptedRuntime`, a fake AgentCore-contract
HTTP runtime on loopback whose answers the test chooses.

Where the test run has PostgreSQL and Redis (CI's second pass), the product gets a
PostgreSQL database of its own (migrated as the owner, served as the application
role, so row-level security holds) and the Redis DB after the test run's: the Redis
broker and the Redis stream relay. Otherwise it runs on its embedded defaults
(SQLite, the filesystem broker, the database relay), as `make run` does.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings

from tests.runtime.helpers import LoopbackServer, Recorded, json_response

BASE_DIR = Path(settings.BASE_DIR)
START_TIMEOUT = 90
HOLD_TIMEOUT = 20  # the longest a scripted answer waits for the test


def _sse(event: dict) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


class ScriptedRuntime(LoopbackServer):
    """`POST /invocations` answers by what the prompt asks for, as `text/event-stream`:

    - "formatting": a first delta, then waits for `release` before the rest (Markdown
      with hostile HTML and links in it), so the test can see text arrive before the end;
    - "story": a delta every 0.1 s until the caller hangs up (noted in `hung_up`);
    - "fail once": a 400 refusal the first time, an answer after;
    - "secret plan": a start naming Globex's blocked "Project Nightingale", then an error
      (the runtime gives up mid-answer);
    - anything else: a short answer.
    """

    # Long enough to be shown before the rest comes even where the tenant's policy redacts
    # PII in answers: the stream then holds back the last characters (guardrails HOLD_BACK).
    FIRST_PART = "Here is the first part. " + "It arrives before the rest of the answer. " * 8
    HOSTILE = (
        "Then **bold** text.\n\n"
        "<script>window.__pwned = 'script'</script>\n\n"
        '<img src="x" onerror="window.__pwned = \'img\'">\n\n'
        "[a link](javascript:window.__pwned='link') and [the docs](https://example.com/docs)\n\n"
        "<a href=\"javascript:window.__pwned='anchor'\" onclick=\"window.__pwned='click'\">raw anchor</a>"
    )

    def __init__(self):
        self.release = threading.Event()
        self.hung_up = threading.Event()
        self.failed_once = False
        super().__init__(self._answer)

    def invocations(self) -> list[Recorded]:
        return [r for r in self.requests if r.path == "/invocations"]

    def _answer(self, request: Recorded):
        if request.path == "/ping":
            return json_response({"status": "Healthy", "time_of_last_update": int(time.time())})
        prompt = request.json().get("prompt", "")
        if "fail once" in prompt and not self.failed_once:
            self.failed_once = True
            return json_response({"code": "invalid_request", "message": "scripted refusal"}, status=400)
        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        if "formatting" in prompt:
            return 200, headers, self._held(self.FIRST_PART, self.HOSTILE)
        if "story" in prompt:
            return 200, headers, self._endless()
        if "secret plan" in prompt:
            return 200, headers, self._given_up(["The plan is ", "Project Nightingale, which "])
        return 200, headers, self._finished(["All good: ", "the answer is **42**."])

    def _finished(self, parts: list[str]) -> Iterator[bytes]:
        for part in parts:
            yield _sse({"type": "delta", "text": part})
        yield _sse({"type": "usage", "input_tokens": 12, "output_tokens": 20, "model": "offline-small"})
        yield _sse({"type": "done"})

    def _given_up(self, parts: list[str]) -> Iterator[bytes]:
        for part in parts:
            yield _sse({"type": "delta", "text": part})
        yield _sse({"type": "error", "code": "model_error", "message": "The model stopped mid-answer."})

    def _held(self, first: str, rest: str) -> Iterator[bytes]:
        yield _sse({"type": "delta", "text": first})
        self.release.wait(HOLD_TIMEOUT)
        yield from self._finished([rest])

    def _endless(self) -> Iterator[bytes]:
        try:
            for i in range(int(HOLD_TIMEOUT / 0.1)):
                yield _sse({"type": "delta", "text": f"Once upon a time ({i}). "})
                time.sleep(0.1)
        except GeneratorExit:  # closed unfinished (LoopbackServer): a write failed, the worker hung up
            self.hung_up.set()
            raise
        yield from self._finished([""])


@dataclass
class Product:
    url: str
    runtime: ScriptedRuntime
    env: dict = field(repr=False)
    log: Path = field(repr=False)

    def sql(self, statement: str, params: tuple = ()) -> list[tuple]:
        """A read of the product's own database (not the test run's)."""
        database_url = self.env["DATABASE_URL"]
        if database_url.startswith("sqlite"):
            import sqlite3

            with contextlib.closing(sqlite3.connect(urlsplit(database_url).path)) as conn:
                return conn.execute(statement.replace("%s", "?"), params).fetchall()
        import psycopg

        with psycopg.connect(self.env["DATABASE_URL"]) as conn:
            # Row-level security applies to this role: read as the operator's cross-tenant views do.
            conn.execute("SELECT set_config('app.all_tenants', 'on', false)")
            return conn.execute(statement, params).fetchall()

    def write(self, statement: str, params: tuple = ()) -> None:
        """A write to the product's own database, committed (data a page must cope with)."""
        database_url = self.env["DATABASE_URL"]
        if database_url.startswith("sqlite"):
            import sqlite3

            with contextlib.closing(sqlite3.connect(urlsplit(database_url).path)) as conn, conn:
                conn.execute(statement.replace("%s", "?"), params)
            return
        import psycopg

        with psycopg.connect(database_url) as conn:
            conn.execute("SELECT set_config('app.all_tenants', 'on', false)")
            conn.execute(statement, params)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _next_redis_db(url: str) -> str:
    parts = urlsplit(url)
    current = int(parts.path.strip("/") or 0)
    return urlunsplit(parts._replace(path=f"/{(current + 1) % 16}"))


@contextlib.contextmanager
def _postgres_database(owner_url: str) -> Iterator[str]:
    import psycopg

    name = f"portal_e2e_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(owner_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [name],
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def _wait_ready(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the product exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:  # noqa: S310 (loopback)
                if response.status == 200:
                    return
        time.sleep(0.2)
    raise TimeoutError(f"the product did not answer /healthz in {START_TIMEOUT} s:\n{log.read_text()[-4000:]}")


@contextlib.contextmanager
def running_product(folder: Path) -> Iterator[Product]:
    port = _free_port()
    with ScriptedRuntime() as runtime, contextlib.ExitStack() as stack:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("DATABASE_", "REDIS_", "CELERY_", "PORTAL_", "RUNTIME_", "AGENT_", "DJANGO_"))
        }
        env.update(
            DJANGO_SETTINGS_MODULE="portal.settings",
            PORTAL_VAR_DIR=str(folder),
            HOST="127.0.0.1",
            PORT=str(port),
            AGENT_RUNTIME="http",
            RUNTIME_URL=runtime.url,
            # Streams end every second, so a long answer is read across several reconnects.
            SSE_STREAM_MAX_SECONDS="1",
            PYTHONUNBUFFERED="1",
        )
        if settings.DATABASE_IS_POSTGRES:
            owner_url = os.environ["DATABASE_OWNER_URL"]
            name = stack.enter_context(_postgres_database(owner_url))
            env["DATABASE_URL"] = _with_database(os.environ["DATABASE_URL"], name)
            env["DATABASE_OWNER_URL"] = _with_database(owner_url, name)
        else:
            env["DATABASE_URL"] = f"sqlite:///{folder / 'portal.sqlite3'}"
        if settings.REDIS_URL:
            env["REDIS_URL"] = _next_redis_db(settings.REDIS_URL)
            flush = [sys.executable, "-c", "import os, redis; redis.Redis.from_url(os.environ['REDIS_URL']).flushdb()"]
            subprocess.run(flush, env=env, check=True, timeout=30)  # noqa: S603 (fixed argv)
            stack.callback(subprocess.run, flush, env=env, timeout=30)
        log = folder / "product.log"
        with log.open("ab") as out:
            # Initech is a silo tenant: on the http runtime its turns run only on its own
            # runtime URL, never the shared one (agents.runtime_gateway). The scripted runtime
            # stands in for that one too; set directly, as the console refuses to bind the
            # platform's shared URL as a dedicated one.
            bind_initech = (
                "from tenants.models import Tenant; t = Tenant.objects.get(slug='initech'); "
                f"t.resource_bindings = {{**t.resource_bindings, 'runtime_url': {runtime.url!r}}}; "
                "t.save(update_fields=['resource_bindings'])"
            )
            for step in (["migrate", "--noinput", "-v", "0"], ["seed_demo"], ["shell", "-c", bind_initech]):
                subprocess.run(  # noqa: S603 (fixed argv)
                    [sys.executable, "manage.py", *step], cwd=BASE_DIR, env=env, stdout=out, stderr=out, check=True
                )
            process = subprocess.Popen(  # noqa: S603 (fixed argv)
                [sys.executable, "-m", "portal.devserver"],
                cwd=BASE_DIR,
                env=env,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, process, log)
            yield Product(url=url, runtime=runtime, env=env, log=log)
        finally:
            process.send_signal(signal.SIGTERM)  # the devserver stops uvicorn and the worker
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

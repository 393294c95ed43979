"""`make run`: the web server (ASGI, uvicorn) and a real Celery worker, together.

Prints the URL and the demo logins, then waits. Ctrl-C (or SIGTERM) stops
both children and waits for them; if either dies, the other is stopped too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = os.environ.get("PORT", "8000")
WORKER_CONCURRENCY = os.environ.get("CELERY_WORKER_CONCURRENCY", "2")


def site_url(host: str, port: str) -> str:
    """The address links should carry when the server listens on host:port.

    A wildcard address is where the server listens, not one a browser can open."""
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 (a comparison, not a bind)
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def configure_environment(environ=os.environ, host: str = HOST, port: str = PORT) -> None:
    """Links in e-mails, the token issuer and the gateway URL derive from SITE_URL
    (portal/settings.py). Unless it is set explicitly, it is where this server listens,
    so `PORT=8123 make run` does not send invitation links to :8000. Set before Django
    starts here and inherited by the web server and the worker."""
    environ.setdefault("SITE_URL", site_url(host, port))


def _queues() -> str:
    out = subprocess.run(
        [sys.executable, "manage.py", "celery_queues"], check=True, capture_output=True, text=True
    ).stdout
    return out.strip() or "default"


def _banner() -> str:
    from tenants.management.commands.seed_demo import DEMO_PASSWORD, OPERATOR_EMAIL, TENANTS, demo_users

    lines = [
        "",
        "  Tenant Portal is running",
        f"  → http://{HOST}:{PORT}/          (API docs: http://{HOST}:{PORT}/api/docs/)",
        "",
        f"  Demo logins (password for all: {DEMO_PASSWORD})",
        f"    operator        {OPERATOR_EMAIL}",
    ]
    for slug, _name, tier, model, _region, _bindings in TENANTS:
        emails = ", ".join(email for email, _n, _r in demo_users(slug))
        lines.append(f"    {slug:<15} ({model}, {tier}) {emails}")
    lines += ["", "  Ctrl-C stops the web server and the worker.", ""]
    return "\n".join(lines)


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    configure_environment()
    import django

    django.setup()
    queues = _queues()
    web = subprocess.Popen(  # noqa: S603 (fixed argv, no user input)
        [
            sys.executable,
            "-m",
            "uvicorn",
            "portal.asgi:application",
            "--host",
            HOST,
            "--port",
            PORT,
            "--log-level",
            "warning",
            # As in production (README, "Serving"); Django does not speak the lifespan protocol.
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--lifespan",
            "off",
        ]
    )
    worker = subprocess.Popen(  # noqa: S603 (fixed argv, no user input)
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "portal",
            "worker",
            "-Q",
            queues,
            "--concurrency",
            WORKER_CONCURRENCY,
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            # Embedded beat: the scheduled jobs (CELERY_BEAT_SCHEDULE, e.g. invoice drafting).
            "--beat",
        ]
    )
    children = [web, worker]
    stopping = False

    def stop(signum=None, frame=None):
        nonlocal stopping
        if stopping:
            return
        stopping = True
        print("\nStopping web server and worker…", flush=True)
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    time.sleep(1.5)
    print(_banner(), flush=True)
    print(f"  Celery worker queues: {queues}\n", flush=True)
    while not stopping:
        for child in children:
            if child.poll() is not None:
                print(f"A process exited with code {child.returncode}; stopping.", flush=True)
                stop()
                return child.returncode or 1
        time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())

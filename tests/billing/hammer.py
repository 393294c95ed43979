"""One "web process" of the concurrency proof: posts one message into each given
conversation, from several threads at once (each with its own database
connection), through the real service (admission, reservation, rate limits).

    python -m tests.billing.hammer --tenant alpha --user member@alpha.test \
        --conversations 1,2,3 --threads 10 --start-at 1764370000.5

Prints one JSON line: {"results": ["accepted" | "<status> <code>" | "error …", …]}.
The database and Redis come from DATABASE_URL / REDIS_URL like the portal's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--conversations", required=True)
    parser.add_argument("--threads", type=int, default=10)
    parser.add_argument("--start-at", type=float, default=0.0)
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    os.environ.setdefault("CELERY_BROKER_URL", "memory://")  # the turns are not run here
    import django

    django.setup()
    from django.db import connection

    from agents import services
    from agents.models import Conversation
    from billing.limits import LimitExceeded
    from tenants.context import all_tenants, tenant_context
    from tenants.models import Membership, Tenant
    from tenants.services import Actor

    with all_tenants("concurrency proof: set-up"):
        tenant = Tenant.objects.get(slug=args.tenant)
    with tenant_context(tenant):
        membership = Membership.objects.select_related("user").get(user__email=args.user)
    actor = Actor(user=membership.user, membership=membership)
    ids = [int(pk) for pk in args.conversations.split(",") if pk]

    def one(pk: int) -> str:
        try:
            delay = args.start_at - time.time()
            if delay > 0:
                time.sleep(delay)
            with tenant_context(tenant):
                conversation = Conversation.objects.get(pk=pk)
                services.post_message(actor, conversation, "How long is the refund window?")
            return "accepted"
        except LimitExceeded as refusal:
            return f"{refusal.status} {refusal.code} {refusal.retry_after}"
        except Exception as exc:  # reported, and the proof fails on it
            return f"error {type(exc).__name__}: {exc}"
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=args.threads) as pool:
        results = list(pool.map(one, ids))
    sys.stdout.write(json.dumps({"results": results}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A worker process for the crash proof: runs one queued turn through the real
claim → stream → finish path (agents.turns.run) with a stand-in runtime.

    python -m tests.billing.crashy_worker --tenant alpha --invocation <uuid> [--hang-file PATH]

With --hang-file the runtime streams part of the answer, creates the file and
then hangs, so the test can SIGKILL the process mid-turn. Without it the turn
finishes with 1,200 input and 300 output tokens. Prints the run's result.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--invocation", required=True)
    parser.add_argument("--hang-file")
    args = parser.parse_args(argv)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()
    from agents import runtime_gateway, turns
    from tenants.context import all_tenants, tenant_context
    from tenants.models import Tenant

    def runtime(tenant, invocation):
        yield {"type": "delta", "text": "The refund window is "}
        if args.hang_file:
            time.sleep(0.6)  # past the cancel-check interval: the delta is flushed and stored
            yield {"type": "delta", "text": "thirty"}
            Path(args.hang_file).write_text("mid-turn")
            time.sleep(600)  # killed here
        yield {"type": "delta", "text": "30 days."}
        yield {"type": "usage", "input_tokens": 1200, "output_tokens": 300}

    runtime_gateway.invoke = runtime
    with all_tenants("crash proof: find the tenant"):
        tenant = Tenant.objects.get(slug=args.tenant)
    with tenant_context(tenant):
        result = turns.run(tenant, args.invocation)
    sys.stdout.write(f"{result}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The issue's concurrency proof: 200 parallel turn requests from 4 OS processes
(each with 8 threads, each thread its own database connection) through the real
post_message → admit path.

* a budget whose bill ceiling (plan fee + token overage, billing.spend) has room for
  exactly 50 turns → exactly 50 accepted, 150 refused 402, the bill within the budget;
* a rate limit of 60/min → at least 60 and at most 60 + what the bucket refilled
  while the test ran accepted, the rest 429 with Retry-After.

On PostgreSQL + Redis (CI) the rate limit is the Redis Lua GCRA and the processes
share the test database. On SQLite the committed test database is copied to a file
the processes open (the test database itself lives in memory), and the limits are
the database-backed ones — the same proof for the embedded default.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from decimal import Decimal

import pytest

from agents import services
from billing import limits, spend
from billing.models import ModelPrice, PriceBook, TenantBudget
from tenants.context import tenant_context
from tests.billing.helpers import actor
from tests.billing.processes import BASE_DIR, database_env, rows

pytestmark = pytest.mark.django_db(transaction=True)

PROCESSES = 4
REQUESTS = 200
THREADS = 8


@pytest.fixture
def proof_world(world, catalogue, tmp_path):
    tier = world.a.tenant.tier
    tier.concurrent_sessions = 1000
    tier.requests_per_minute = 100_000
    tier.tokens_per_minute = 100_000_000
    tier.save()
    book = PriceBook.objects.create(version=1, effective_from="2000-01-01T00:00:00Z")
    ModelPrice.objects.create(price_book=book, model_key="offline-small", per_1k_input=1, per_1k_output=1)
    with tenant_context(world.a.tenant):
        conversations = [services.start_conversation(actor(world.a), catalogue.helpdesk.pk).pk for _ in range(REQUESTS)]
    return world, catalogue, conversations


def hammer(world, conversations, env) -> tuple[list[str], float]:
    start_at = time.time() + 3.0  # every process is up and connected before anyone posts
    chunks = [conversations[i::PROCESSES] for i in range(PROCESSES)]
    children = [
        subprocess.Popen(  # noqa: S603 (fixed argv)
            [
                sys.executable,
                "-m",
                "tests.billing.hammer",
                "--tenant",
                world.a.tenant.slug,
                "--user",
                world.a.member.email,
                "--conversations",
                ",".join(str(pk) for pk in chunk),
                "--threads",
                str(THREADS),
                "--start-at",
                str(start_at),
            ],
            cwd=BASE_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for chunk in chunks
    ]
    results: list[str] = []
    for child in children:
        out, err = child.communicate(timeout=180)
        assert child.returncode == 0, err[-2000:]
        results += json.loads(out.strip().splitlines()[-1])["results"]
    return results, time.time() - start_at


OPEN_AT_ONCE = """
import sqlite3, sys, time
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
db = sqlite3.connect(sys.argv[1], timeout=20)
db.executescript(sys.argv[3])  # the product's init_command
db.execute("SELECT COUNT(*) FROM tenants_tenant").fetchall()
"""


def test_the_processes_can_all_open_the_database_copy_at_the_same_moment(db, tmp_path):
    """Each proof starts its processes together, and each opens the copy with the product's
    init_command, which switches a file to WAL. Two first switches at once fail with
    "database is locked" at once, whatever the busy timeout: the copy must already be WAL."""
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("SQLite's copy of the test database; on PostgreSQL the processes share it")
    init_command = connection.settings_dict["OPTIONS"]["init_command"]
    errors = []
    for attempt in range(5):  # a race: each round is a fresh copy, opened by 8 processes at once
        (tmp_path / str(attempt)).mkdir()
        _, path = database_env(tmp_path / str(attempt))
        start_at = str(time.time() + 1.0)
        children = [
            subprocess.Popen(  # noqa: S603 (fixed argv)
                [sys.executable, "-c", OPEN_AT_ONCE, str(path), start_at, init_command],
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(8)
        ]
        errors += [child.communicate(timeout=60)[1] for child in children]
    assert [error.strip().splitlines()[-1] for error in errors if error] == []


def test_200_parallel_turns_against_a_budget_for_50_accept_exactly_50(proof_world, tmp_path):
    world, catalogue, conversations = proof_world
    tier = world.a.tenant.tier
    tier.monthly_price, tier.included_tokens = Decimal("100.00"), 1000
    tier.overage_allowed, tier.overage_price_per_1k_tokens = True, Decimal("0.5")
    tier.save()
    tokens, _ = limits.estimate_turn(catalogue.offering, "How long is the refund window?")
    # Every conversation is new, so every estimate is the same. The budget caps the bill:
    # the fee plus the overage of 50 estimates, rounded up to the cent — a token ceiling
    # that holds 50 of them, not 51. (The price book's cost of 50 turns, ~$52, is far
    # below the budget: a budget on cost would let all 200 through.)
    overage = (Decimal(50 * tokens - 1000) * Decimal("0.5") / 1000).quantize(Decimal("0.01"), rounding="ROUND_UP")
    budget = Decimal("100.00") + overage
    ceiling = spend.budget_token_ceiling(tier, budget)
    assert 50 * tokens <= ceiling < 51 * tokens
    with tenant_context(world.a.tenant):
        TenantBudget.objects.create(monthly_budget=budget)
    env, path = database_env(tmp_path)

    results, _ = hammer(world, conversations, env)

    assert len(results) == REQUESTS
    assert [r for r in results if r.startswith("error")] == []
    assert results.count("accepted") == 50
    refusals = [r for r in results if r != "accepted"]
    assert all(r.startswith("402 budget_exceeded ") for r in refusals), set(refusals)
    tenant = world.a.tenant.pk
    assert rows(path, f"SELECT COUNT(*) FROM billing_reservation WHERE tenant_id = {tenant}") == [(50,)]  # noqa: S608
    assert rows(path, f"SELECT COUNT(*) FROM agents_invocation WHERE tenant_id = {tenant}") == [(50,)]  # noqa: S608
    (reserved,) = rows(
        path,
        f"SELECT tokens_reserved FROM billing_monthlyusage WHERE tenant_id = {tenant} AND user_key = 0",  # noqa: S608
    )[0]
    assert reserved == 50 * tokens <= ceiling
    assert spend.bill(tier, reserved).total <= budget < spend.bill(tier, reserved + tokens).total
    # Every refusal left its ThrottleEvent, though its own transaction rolled back.
    assert rows(path, f"SELECT kind, COUNT(*) FROM billing_throttleevent WHERE tenant_id = {tenant} GROUP BY kind") == [  # noqa: S608, E501
        ("budget", 150)
    ]


def test_200_parallel_turns_against_60_per_minute_accept_at_most_the_limit_plus_refill(proof_world, tmp_path):
    world, catalogue, conversations = proof_world
    tier = world.a.tenant.tier
    tier.requests_per_minute = 60
    tier.save()
    env, path = database_env(tmp_path)

    results, elapsed = hammer(world, conversations, env)

    assert [r for r in results if r.startswith("error")] == []
    accepted = results.count("accepted")
    # GCRA: a burst of one minute's allowance, then one more per second.
    assert 60 <= accepted <= 60 + math.ceil(elapsed) + 1, (accepted, elapsed)
    refusals = [r for r in results if r != "accepted"]
    assert refusals and all(r.startswith("429 rate_limited ") for r in refusals), set(refusals)
    assert all(int(r.split()[2]) >= 1 for r in refusals)  # Retry-After
    tenant = world.a.tenant.pk
    assert rows(path, f"SELECT COUNT(*) FROM agents_invocation WHERE tenant_id = {tenant}") == [(accepted,)]  # noqa: S608
    assert rows(path, f"SELECT COUNT(*) FROM billing_throttleevent WHERE tenant_id = {tenant}") == [  # noqa: S608
        (REQUESTS - accepted,)
    ]

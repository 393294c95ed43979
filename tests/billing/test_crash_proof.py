"""The issue's crash proof: a worker process killed with SIGKILL mid-turn, then the
turn delivered again (what the broker does for an unacknowledged task: acks_late
+ reject_on_worker_lost) → exactly one usage event; replaying the finished task
more times changes no sum.

The worker is a real OS process running agents.turns.run (claim → stream →
finish) against the test database; the redelivery is another process running
the same task once the killed claim is stale (STALE_AFTER, moved into the past
here instead of waiting three minutes).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from billing.models import ModelPrice, PriceBook
from tests.billing.helpers import ask
from tests.billing.processes import BASE_DIR, database_env, execute, rows

pytestmark = pytest.mark.django_db(transaction=True)


def worker(env, world, invocation, hang_file=None) -> subprocess.Popen:
    argv = [sys.executable, "-m", "tests.billing.crashy_worker", "--tenant", world.a.tenant.slug]
    argv += ["--invocation", str(invocation.pk)]
    if hang_file:
        argv += ["--hang-file", str(hang_file)]
    return subprocess.Popen(  # noqa: S603 (fixed argv)
        argv, cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(child: subprocess.Popen) -> str:
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err[-3000:]
    return out.strip().splitlines()[-1]


def sums(path, tenant_id: int) -> dict:
    where = f"WHERE tenant_id = {tenant_id}"
    return {
        "events": rows(path, f"SELECT COUNT(*), SUM(input_tokens), SUM(output_tokens) FROM billing_usageevent {where}"),  # noqa: S608
        "daily": rows(
            path, f"SELECT SUM(turns), SUM(input_tokens), SUM(output_tokens) FROM billing_usagedaily {where}"
        ),  # noqa: S608
        "month": rows(
            path,
            f"SELECT user_key, tokens_used, tokens_reserved FROM billing_monthlyusage {where} ORDER BY user_key",  # noqa: S608
        ),
        "reservations": rows(path, f"SELECT status FROM billing_reservation {where}"),  # noqa: S608
    }


def test_a_worker_killed_mid_turn_bills_exactly_once_after_redelivery(world, catalogue, tmp_path, monkeypatch):
    monkeypatch.setattr("agents.services._enqueue", lambda invocation: None)  # the test is the broker
    book = PriceBook.objects.create(version=1, effective_from="2000-01-01T00:00:00Z")
    ModelPrice.objects.create(price_book=book, model_key="offline-small", per_1k_input=1, per_1k_output=1)
    invocation = ask(world.a, catalogue.helpdesk)
    env, path = database_env(tmp_path)
    tenant_id = world.a.tenant.pk
    table = f"agents_invocation WHERE id = '{invocation.pk.hex if path else invocation.pk}'"

    # 1. The worker claims the turn, streams part of the answer, and is killed.
    hang_file = tmp_path / "mid-turn"
    child = worker(env, world, invocation, hang_file)
    deadline = time.monotonic() + 60
    while not hang_file.exists():
        assert child.poll() is None, child.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the worker never reached the middle of the turn"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    (status,) = rows(path, f"SELECT status FROM {table}")[0]  # noqa: S608
    assert status in ("running", "streaming")
    assert sums(path, tenant_id)["events"][0][0] == 0  # nothing billed for the lost attempt
    assert sums(path, tenant_id)["reservations"] == [("held",)]

    # 2. The broker redelivers once the claim is stale; the turn runs to the end.
    shift = "datetime(started_at, '-1 hour')" if path else "started_at - interval '1 hour'"
    execute(path, f"UPDATE {table.replace(' WHERE', ' SET started_at = ' + shift + ' WHERE')}")
    assert finish(worker(env, world, invocation)) == "done"
    after = sums(path, tenant_id)
    assert after["events"] == [(1, 1200, 300)]
    assert after["daily"] == [(1, 1200, 300)]
    assert after["month"] == [(0, 1500, 0), (world.a.member.pk, 1500, 0)]
    assert after["reservations"] == [("settled",)]
    (status, attempts) = rows(path, f"SELECT status, attempts FROM {table}")[0]  # noqa: S608
    assert (status, attempts) == ("done", 2)

    # 3. Replaying the finished task N times leaves every sum unchanged.
    for _ in range(3):
        assert finish(worker(env, world, invocation)) == "done"
    assert sums(path, tenant_id) == after

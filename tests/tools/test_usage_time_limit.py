"""`usage_this_month` reads the database, so it runs in the request's thread, not in the
pure handlers' worker pool: its time limit is the database's (PostgreSQL's
statement_timeout set locally in its own transaction, SQLite's progress handler).
A slow read is refused like a slow pure tool — 504 problem over REST, an isError
result over MCP — and the connection is fine for the next call."""

from __future__ import annotations

import json
import time

import pytest
from django.db import connection

from agents.tools import services
from tests.tools.test_gateway import assert_problem, invoke, scene, token_for  # noqa: F401 (fixture)

LIMIT = 0.5


def slow_outlook(tenant, now=None, parts=None):
    """A month outlook whose query runs far past the limit."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_sleep(20)")
        else:
            cursor.execute(
                "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n LIMIT 100000000) SELECT count(*) FROM n"
            )
    raise AssertionError("the slow query was not stopped")


@pytest.fixture
def slow(monkeypatch):
    monkeypatch.setattr(services, "TIME_LIMIT_SECONDS", LIMIT)
    monkeypatch.setattr("billing.dashboards.month_outlook", slow_outlook)


def test_a_slow_usage_read_is_refused_with_504_in_time(client, world, scene, slow):  # noqa: F811
    token = token_for(world.a, scene["turns"]["a_admin"])
    started = time.monotonic()
    response = invoke(client, token, tool="usage_this_month", tool_input={})
    assert time.monotonic() - started < LIMIT + 3
    assert_problem(response, 504, detail="usage_this_month took longer than 0.5 s")
    # The connection (and its tenant scope) still works for the next call.
    assert invoke(client, token).json() == {"result": {"expression": "6 * 7", "value": 42}}


def test_over_mcp_a_slow_usage_read_is_an_error_result(client, world, scene, slow):  # noqa: F811
    token = token_for(world.a, scene["turns"]["a_admin"])
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "usage_this_month"}}
    response = client.post(
        "/api/v1/gateway/mcp",
        data=json.dumps(message),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    result = response.json()["result"]
    assert result["isError"] is True
    assert "took longer than 0.5 s" in result["content"][0]["text"]


def test_a_usage_read_in_time_is_not_affected(client, world, scene, monkeypatch):  # noqa: F811
    monkeypatch.setattr(services, "TIME_LIMIT_SECONDS", 5.0)
    response = invoke(client, token_for(world.a, scene["turns"]["a_admin"]), tool="usage_this_month", tool_input={})
    assert response.status_code == 200 and "tokens" in response.json()["result"]

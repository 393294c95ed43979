"""`make bench`: run the chat-path benchmarks, print a table, write var/bench/chat.json.

Each measurement runs in a process of its own, with its own database (a SQLite
file under var/bench/, or a PostgreSQL database this script creates as the owner
role and drops afterwards), its own Redis DB (BENCH_REDIS_URL, flushed before and
after) and its own child processes (stopped at its end; on overrun the whole
process group is killed). PostgreSQL or Redis being unreachable skips what needs
them, with the reason in the table and the JSON.

    python -m tests.bench.run [--only inprocess,queue,throughput,sse] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

from tests.bench.common import (
    PG_OWNER_URL,
    REDIS_URL,
    VAR_BENCH,
    create_database,
    django_env,
    drop_database,
    flush_redis,
    log,
    postgres_unreachable,
    python_speed_ms,
    redis_unreachable,
    stop_leftovers,
)

RESULT = VAR_BENCH / "chat.json"


class Skipped(Exception):
    pass


def run_measurement(name: str, module: str, argv: list[str], *, postgres: bool, redis: bool, timeout: float) -> dict:
    """One measurement in its own process, database and Redis DB; its JSON result."""
    var_dir = VAR_BENCH / name
    shutil.rmtree(var_dir, ignore_errors=True)
    var_dir.mkdir(parents=True)
    database = f"portal_bench_{name}_{os.getpid()}" if postgres else None
    out = var_dir / "result.json"
    if database:
        log(f"{name}: creating PostgreSQL database {database}")
        create_database(database)
    if redis:
        flush_redis()
    pidfile = var_dir / "children.pids"
    env = django_env(database, redis=redis, var_dir=var_dir, BENCH_PIDFILE=str(pidfile))
    process = None
    try:
        process = subprocess.Popen([sys.executable, "-m", module, "--out", str(out), *argv], env=env)  # noqa: S603
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"{name}: over its {timeout:.0f} s budget, stopping it (pid {process.pid}) and its children")
            raise RuntimeError(f"timed out after {timeout:.0f} s")
        if code != 0:
            raise RuntimeError(f"exited with {code} (see output above and var/bench/logs/)")
        return json.loads(out.read_text())
    finally:
        if process is not None and process.poll() is None:
            process.terminate()  # its SIGTERM handler stops its children
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        stop_leftovers(pidfile)
        if redis:
            flush_redis()
        if database:
            drop_database(database)
            log(f"{name}: dropped database {database}")


def _attempt(results: dict, key: str, fn) -> None:
    started = time.monotonic()
    load = [round(x, 2) for x in os.getloadavg()]
    try:
        results[key] = fn()
    except Skipped as exc:
        results[key] = {"skipped": str(exc)}
        log(f"{key}: skipped — {exc}")
    except Exception as exc:
        results[key] = {"error": f"{exc.__class__.__name__}: {exc}"}
        log(f"{key}: FAILED — {exc}")
    results[key]["seconds"] = round(time.monotonic() - started, 1)
    # Other work on the machine skews every figure; this says how busy it was when this one began.
    results[key]["load_average_before"] = load


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="inprocess,queue,throughput,sse")
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run, not a result)")
    args = parser.parse_args()
    only = set(args.only.split(","))
    quick = args.quick
    VAR_BENCH.mkdir(parents=True, exist_ok=True)
    begun = time.monotonic()
    speed_before = python_speed_ms()

    print("Tenant Portal chat benchmarks (all load on 127.0.0.1)", flush=True)
    no_postgres = postgres_unreachable()
    no_redis = redis_unreachable()
    print(f"  PostgreSQL: {no_postgres or 'reachable at ' + PG_OWNER_URL}", flush=True)
    print(f"  Redis:      {no_redis or 'reachable at ' + REDIS_URL}", flush=True)

    def needs(*missing):
        reasons = [m for m in missing if m]
        if reasons:
            raise Skipped("; ".join(reasons))

    results: dict = {}
    turns = ["--turns", "60", "--warmup", "10"] if quick else ["--turns", "400", "--warmup", "50"]
    if "inprocess" in only:
        _attempt(
            results,
            "inprocess_sqlite",
            lambda: run_measurement(
                "inprocess_sqlite",
                "tests.bench.inprocess",
                [*turns, "--label", "sqlite"],
                postgres=False,
                redis=False,
                timeout=240,
            ),
        )

        def postgres_inprocess():
            needs(no_postgres)
            return run_measurement(
                "inprocess_postgres",
                "tests.bench.inprocess",
                [*turns, "--label", "postgres"],
                postgres=True,
                redis=not no_redis,
                timeout=240,
            )

        _attempt(results, "inprocess_postgres", postgres_inprocess)
    if "queue" in only:

        def queue():
            needs(no_postgres, no_redis)
            samples = ["--samples", "40", "--warmup", "5"] if quick else ["--samples", "300", "--warmup", "20"]
            return run_measurement(
                "queue", "tests.bench.queue_latency", samples, postgres=True, redis=True, timeout=180
            )

        _attempt(results, "queue", queue)
    if "throughput" in only:

        def throughput():
            needs(no_postgres, no_redis)
            load = ["--turns", "200", "--clients", "32"] if quick else []
            return run_measurement("throughput", "tests.bench.throughput", load, postgres=True, redis=True, timeout=240)

        _attempt(results, "throughput", throughput)
    if "sse" in only:

        def sse():
            needs(no_postgres, no_redis)
            load = ["--streams", "100"] if quick else []
            return run_measurement("sse", "tests.bench.sse", load, postgres=True, redis=True, timeout=240)

        _attempt(results, "sse", sse)

    document = headline(results)
    document["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "python_speed_ms": {"before": speed_before, "after": python_speed_ms()},
        "quick": quick,
    }
    document["seconds"] = round(time.monotonic() - begun, 1)
    document["details"] = results
    RESULT.write_text(json.dumps(document, indent=2, default=str))
    print()
    print(table(document))
    print(f"\nwritten: {RESULT.relative_to(VAR_BENCH.parent.parent)} ({document['seconds']} s)")
    return 0


def _get(results: dict, *path):
    node = results
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _why(result: dict | None) -> str | None:
    if not isinstance(result, dict) or not result:
        return "not run"
    return result.get("skipped") or result.get("error")


def headline(results: dict) -> dict:
    """The flat keys of chat.json (null when a measurement was skipped or failed, with the reason)."""
    doc: dict = {"skipped": {}}
    sqlite, postgres = results.get("inprocess_sqlite"), results.get("inprocess_postgres")
    for label, result in (("sqlite", sqlite), ("postgres", postgres)):
        for p in ("p50", "p99"):
            doc[f"overhead_inprocess_ms_{p}_{label}"] = _get(result, "overhead_ms", p)
        if _why(result):
            doc["skipped"][f"overhead_inprocess_{label}"] = _why(result)
    source = "postgres" if doc["overhead_inprocess_ms_p50_postgres"] is not None else "sqlite"
    doc["overhead_inprocess_ms_p50"] = doc[f"overhead_inprocess_ms_p50_{source}"]
    doc["overhead_inprocess_ms_p99"] = doc[f"overhead_inprocess_ms_p99_{source}"]
    doc["overhead_inprocess_source"] = source if doc["overhead_inprocess_ms_p50"] is not None else None

    queue = results.get("queue")
    doc["queue_to_runtime_ms_p50"] = _get(queue, "queue_to_runtime_ms", "p50")
    doc["queue_to_runtime_ms_p99"] = _get(queue, "queue_to_runtime_ms", "p99")
    doc["bare_celery_ms_p50"] = _get(queue, "bare_celery_ms", "p50")
    doc["bare_celery_ms_p99"] = _get(queue, "bare_celery_ms", "p99")
    if _why(queue):
        doc["skipped"]["queue_to_runtime"] = _why(queue)

    throughput = results.get("throughput")
    doc["turns_per_s_200ms_runtime"] = _get(throughput, "turns_per_s")
    if _why(throughput):
        doc["skipped"]["turns_per_s_200ms_runtime"] = _why(throughput)

    sse = results.get("sse")
    doc["sse_streams_concurrent"] = _get(sse, "streams_concurrent")
    doc["web_rss_mb_at_500_streams"] = _get(sse, "web_rss_mb_at_streams")
    if _why(sse):
        doc["skipped"]["sse"] = _why(sse)
    return doc


def _fmt(value, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        value = f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 100 else f"{value:.0f}"
    return f"{value}{unit}"


def table(doc: dict) -> str:
    d = doc["details"]
    rows = []

    def row(metric, value, goal="", note=""):
        rows.append((metric, value, goal, note))

    def skipped(metric, goal, result):
        row(metric, "skipped", goal, (_why(result) or "")[:90])

    for label in ("sqlite", "postgres"):
        r = d.get(f"inprocess_{label}") or {}
        if _why(r):
            skipped(f"overhead in-process, {label}", "≤ 3 ms p50", r)
            continue
        trips = r.get("db_round_trips_per_turn")
        row(
            f"overhead in-process, {label} p50/p99",
            f"{_fmt(r['overhead_ms']['p50'])} / {_fmt(r['overhead_ms']['p99'])} ms",
            "≤ 3 ms p50",
            f"post_message {_fmt(r['post_message_ms']['p50'])} + worker {_fmt(r['worker_ms']['p50'])} ms; "
            f"{r['queries_per_turn']['total']} SQL{f', {trips:.0f} round trips' if trips else ''}; "
            f"relay {r['relay']}",
        )
        spans = r.get("spans_ms", {})
        row(
            "  claim / token mint+exchange / finish p50",
            " / ".join(_fmt(spans.get(k, {}).get("p50")) for k in ("_claim", "mint_act_on_behalf_token", "_finish"))
            + " ms",
        )
    q = d.get("queue") or {}
    if _why(q):
        skipped("queue → runtime", "≤ 2× bare", q)
    else:
        row(
            "queue → runtime p50/p99",
            f"{_fmt(q['queue_to_runtime_ms']['p50'])} / {_fmt(q['queue_to_runtime_ms']['p99'])} ms",
            "≤ 2× bare",
            f"{q['ratio_p50']}× bare (p50); commit → fake HTTP runtime; worker {q['worker']['pool']}"
            f"×{q['worker']['concurrency']}",
        )
        row(
            "bare Celery no-op p50/p99",
            f"{_fmt(q['bare_celery_ms']['p50'])} / {_fmt(q['bare_celery_ms']['p99'])} ms",
            "",
            "enqueue → task start, same queue and worker",
        )
    t = d.get("throughput") or {}
    if _why(t):
        skipped("turns/s, 200 ms runtime", "≥ 150", t)
    else:
        row(
            "turns/s, 200 ms runtime",
            _fmt(t["turns_per_s"]),
            "≥ 150",
            f"{t['completed']}/{t['turns']} turns in {t['elapsed_s']} s, {t['clients']} clients, "
            f"uvicorn×{t.get('web', {}).get('processes', 1)}, "
            f"worker {t['worker']['pool']}×{t['worker']['concurrency']}; errors {sum(t['errors'].values())}",
        )
        row(
            "  turn p50/p99 (POST → done on SSE)",
            f"{_fmt(t['turn_ms']['p50'])} / {_fmt(t['turn_ms']['p99'])} ms",
            "",
            f"POST 202 p50 {_fmt(t['post_ms']['p50'])} ms",
        )
        per_turn = t.get("cpu_ms_per_turn") or {}
        cpu = t.get("cpu_cores_by_process") or {}
        row(
            "  CPU ms/turn web+worker+pg+redis",
            f"{' + '.join(_fmt(per_turn.get(k)) for k in ('web', 'worker', 'postgres', 'redis'))}",
            "",
            f"= {_fmt(t.get('cpu_ms_per_turn_total'))} ms ⇒ ≤ {_fmt(t.get('turns_per_s_cpu_ceiling'))} turns/s on "
            f"{doc['machine']['cpus']} cores; machine {t['machine_busy_fraction']:.0%} busy, "
            f"other load {_fmt(cpu.get('rest of machine'))} cores",
        )
    s = d.get("sse") or {}
    if _why(s):
        skipped("SSE streams served concurrently", "500", s)
    else:
        row(
            "SSE streams served concurrently",
            f"{s['streams_concurrent']} / {s['streams']}",
            "500",
            f"1 uvicorn, Redis relay; final-event delivery p50/p99 {_fmt(s['delivery_ms']['p50'])}/"
            f"{_fmt(s['delivery_ms']['p99'])} ms (all {s['streams']} at once); errors {sum(s['errors'].values())}",
        )
        row(
            "web RSS with the streams open",
            f"{_fmt(s['web_rss_mb_at_streams'])} MB",
            "",
            f"idle {_fmt(s['web_rss_mb_idle'])} MB; {_fmt(s.get('idle_cpu_cores'))} cores while they sit idle; "
            f"PostgreSQL connections peak {s.get('postgres_connections_peak')}",
        )
    headers = ("metric", "value", "goal", "notes")
    widths = [max(len(str(r[i])) for r in [*rows, headers]) for i in range(3)]
    lines = [f"{headers[0]:<{widths[0]}}  {headers[1]:<{widths[1]}}  {headers[2]:<{widths[2]}}  {headers[3]}"]
    lines.append("-" * (sum(widths) + 6 + 60))
    for metric, value, goal, note in rows:
        lines.append(f"{metric:<{widths[0]}}  {value:<{widths[1]}}  {goal:<{widths[2]}}  {note}".rstrip())
    if doc.get("skipped"):
        lines.append("")
        for key, why in doc["skipped"].items():
            lines.append(f"skipped/failed {key}: {why}")
    speed = doc.get("machine", {}).get("python_speed_ms")
    if speed:
        lines.append("")
        lines.append(
            f"machine: python_speed_ms {speed['before']} before, {speed['after']} after "
            "(a fixed Python workload; the figures above scale with it: compare runs only next to it)"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

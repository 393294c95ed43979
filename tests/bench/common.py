"""Shared helpers of the benchmarks: configuration, statistics, child processes.

Nothing here imports Django, so the orchestrator (run.py) can use it before any
settings exist; measurement processes set their environment first and then
call `setup_django()`.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]
VAR_BENCH = BASE_DIR / "var" / "bench"
LOG_DIR = VAR_BENCH / "logs"

# Where the bench may put load: loopback only, its own database names and Redis DB.
PG_OWNER_URL = os.environ.get("BENCH_PG_OWNER_URL", "postgres://portal_owner@127.0.0.1:5432/postgres")
PG_APP_ROLE = os.environ.get("BENCH_PG_APP_ROLE", "portal_app")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")
HOST = "127.0.0.1"

BENCH_TENANT = "bench"
BENCH_QUEUE = "tier-bench"


def log(message: str) -> None:
    print(f"  [{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- statistics --------------------------------------------------------------------------------


def percentile(values: Iterable[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0–100) of `values`; None when there are none."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(seconds: Iterable[float]) -> dict:
    """p50 / p90 / p99 / max / mean in milliseconds of durations given in seconds."""
    values = [s * 1000 for s in seconds]
    if not values:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}
    return {
        "n": len(values),
        "p50": round(percentile(values, 50), 3),
        "p90": round(percentile(values, 90), 3),
        "p99": round(percentile(values, 99), 3),
        "max": round(max(values), 3),
        "mean": round(sum(values) / len(values), 3),
    }


# --- the database and Redis the bench owns -------------------------------------------------------


def _pg_url(database: str, role: str | None = None) -> str:
    """PG_OWNER_URL with another database (and role)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(PG_OWNER_URL)
    netloc = parts.netloc
    if role is not None:
        host = netloc.rsplit("@", 1)[-1]
        netloc = f"{role}@{host}"
    return urlunsplit((parts.scheme, netloc, f"/{database}", parts.query, ""))


def postgres_unreachable() -> str | None:
    """None when the owner role can connect and create databases; else why not."""
    try:
        import psycopg

        with psycopg.connect(PG_OWNER_URL, connect_timeout=3, autocommit=True) as conn:
            can_create = conn.execute("SELECT rolcreatedb FROM pg_roles WHERE rolname = current_user").fetchone()
            app_role = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [PG_APP_ROLE]).fetchone()
    except Exception as exc:
        return f"PostgreSQL unreachable at {PG_OWNER_URL}: {str(exc).strip().splitlines()[0][:160]}"
    if not can_create or not can_create[0]:
        return f"the role in BENCH_PG_OWNER_URL ({PG_OWNER_URL}) may not create databases"
    if not app_role:
        return f"the application role {PG_APP_ROLE!r} does not exist"
    return None


def redis_unreachable() -> str | None:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2).ping()
    except Exception as exc:
        return f"Redis unreachable at {REDIS_URL}: {str(exc)[:160]}"
    return None


def create_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_OWNER_URL, connect_timeout=5, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')


def drop_database(name: str) -> None:
    """Drop the bench's database; retried briefly while killed children's connections go away."""
    import psycopg

    deadline = time.monotonic() + 15
    while True:
        try:
            with psycopg.connect(PG_OWNER_URL, connect_timeout=5, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            return
        except psycopg.errors.ObjectInUse:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def flush_redis() -> None:
    import redis

    redis.Redis.from_url(REDIS_URL, socket_timeout=5).flushdb()


def django_env(database: str | None, *, redis: bool, var_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a bench process or child: SQLite file (database=None) or the bench's
    own PostgreSQL database, with or without the bench's Redis DB."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_", "CELERY_"))}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "portal.settings",
            "PORTAL_VAR_DIR": str(var_dir),
            "LOG_LEVEL": "WARNING",
            "DEBUG": "0",
            "AGENT_RUNTIME": "local",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if database is None:
        env["DATABASE_URL"] = f"sqlite:///{var_dir / 'portal.sqlite3'}"
    else:
        env["DATABASE_URL"] = _pg_url(database, PG_APP_ROLE)
        env["DATABASE_OWNER_URL"] = _pg_url(database)
    env["REDIS_URL"] = REDIS_URL if redis else ""
    env.update(extra)
    return env


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    import django

    django.setup()


def migrate() -> None:
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


def python_speed_ms() -> float:
    """How fast this machine runs Python right now: the median time of five runs of one
    fixed workload (dict updates, arithmetic, a JSON dump), in ms.

    Every chat figure is mostly Python, and this VM's speed drifts a lot from one hour
    to the next (the same code measured 2.7 and 9.5 ms in-process on different days), so
    the result files carry this next to the figures: compare figures across runs only
    when it is similar, or scale by it."""
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        counts: dict[int, int] = {}
        for i in range(200_000):
            counts[i % 1000] = counts.get(i % 1000, 0) + i
        json.dumps(counts)
        samples.append((time.perf_counter() - started) * 1000)
    return round(sorted(samples)[2], 1)


def analyze() -> None:
    """Refresh PostgreSQL's table statistics, as autovacuum would have in a live database.

    A bench database starts empty, and the turn's statements, prepared on each connection
    (portal.db.sql), are planned on what the planner knows then: on tables it has never
    measured, any index on tenant_id looks as good as a primary key, and the plans read
    every row of the tenant. In a database that has been running, autovacuum's ANALYZE
    (after 50 rows + 10 % of a table change) replans them; a bench lasting half a minute
    would be measuring the first minute of a new install instead. So each measurement
    calls this after its warm-up (every prepared statement is replanned after it)."""
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"] != "portal.db.postgresql":
        return
    import psycopg

    with psycopg.connect(os.environ["DATABASE_OWNER_URL"], autocommit=True) as connection:
        connection.execute("ANALYZE")


# --- child processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args[:4]} exited with {process.returncode} before listening")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {HOST}:{port} after {timeout:.0f} s")


def rss_mb(pid: int) -> float | None:
    """Resident set size of one process (psutil if installed, else /proc/<pid>/status VmRSS)."""
    try:
        import psutil

        return round(psutil.Process(pid).memory_info().rss / 2**20, 1)
    except ImportError:
        pass
    except Exception:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a process has used so far (from /proc/<pid>/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def stop_leftovers(pidfile: Path) -> None:
    """Stop, by pid, children a measurement started and could not stop itself (it was killed)."""
    if not pidfile.exists():
        return
    for line in pidfile.read_text().split():
        pid = int(line)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue  # gone
        if b"tests.bench" not in cmdline and b"portal.asgi" not in cmdline:
            continue  # the pid was reused by something else
        try:
            os.kill(pid, signal.SIGKILL)
            log(f"stopped leftover child {pid}")
        except ProcessLookupError:
            pass
    pidfile.unlink()


def _stat(pid: str) -> tuple[str, int, float, float] | None:
    """(comm, ppid, own CPU s, waited-for children's CPU s) of a process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw.rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return comm, int(fields[1]), (int(fields[11]) + int(fields[12])) / tick, (int(fields[13]) + int(fields[14])) / tick


def cpu_snapshot(ours: dict[str, int], with_children: tuple[str, ...] = ()) -> dict[str, float]:
    """CPU seconds used so far by: each of `ours` (name → pid; for the names in
    `with_children`, with its live child processes, e.g. uvicorn's workers), PostgreSQL
    (the postmaster's waited-for children, i.e. backends that have exited, plus every
    live postgres process), Redis, and the whole machine ("busy", from /proc/stat).
    Differences of two snapshots say where the cores went; "rest" is whatever else ran
    (other users of the machine)."""
    snapshot = {name: (cpu_seconds(pid) or 0.0) for name, pid in ours.items()}
    parents = {ours[name]: name for name in with_children}
    postgres = redis = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(entry.name)
        if stat is None:
            continue
        comm, ppid, own, children = stat
        if ppid in parents:
            snapshot[parents[ppid]] += own
        if comm == "postgres":
            postgres += own + (children if ppid == 1 else 0.0)
        elif comm == "redis-server":
            redis += own
    snapshot["postgres"], snapshot["redis"] = postgres, redis
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    snapshot["busy"] = (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
    return snapshot


def cpu_cores(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """Cores used per category between two snapshots, plus "rest" (the machine minus all the named ones)."""
    cores = {name: round((after[name] - before[name]) / seconds, 2) for name in after}
    busy = cores.pop("busy")
    cores["rest of machine"] = round(max(0.0, busy - sum(cores.values())), 2)
    cores["machine"] = round(busy, 2)
    return cores


class ConnectionSampler:
    """Peak number of PostgreSQL connections to one database, sampled every 0.25 s in a thread."""

    def __init__(self, owner_url: str, database: str):
        import threading

        self.owner_url, self.database = owner_url, database
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psycopg

        try:
            with psycopg.connect(self.owner_url, autocommit=True, connect_timeout=5) as conn:
                while not self._stop.wait(0.25):
                    row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [self.database])
                    self.peak = max(self.peak, row.fetchone()[0] - 1)  # not counting this one
        except Exception:
            self.peak = -1

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Children:
    """Child processes of one measurement, always stopped on exit (even on error).

    Children stay in the measurement's process group, so the orchestrator can stop
    a measurement that overruns together with everything it started; here each
    child is stopped by its own pid (SIGTERM, then SIGKILL after a grace period).
    """

    def __init__(self, tag: str):
        self.tag = tag
        self.processes: list[tuple[str, subprocess.Popen]] = []
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        # A SIGTERM from the orchestrator (overrun) unwinds through __exit__, which stops the children.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        path = LOG_DIR / f"{self.tag}-{name}.log"
        with open(path, "wb") as out:
            process = subprocess.Popen(  # noqa: S603 (fixed argv)
                argv, cwd=BASE_DIR, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.processes.append((name, process))
        pidfile = os.environ.get("BENCH_PIDFILE")
        if pidfile:  # so the orchestrator can stop them by pid should this process die first
            with open(pidfile, "a") as f:
                f.write(f"{process.pid}\n")
        log(f"started {name} (pid {process.pid}): {' '.join(argv[1:8])}{' …' if len(argv) > 8 else ''}")
        return process

    def stop(self, process: subprocess.Popen, grace: float = 10.0) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)

    def stop_all(self) -> None:
        for name, process in reversed(self.processes):
            running = process.poll() is None
            self.stop(process)
            if running:
                log(f"stopped {name} (pid {process.pid}, exit {process.returncode})")
        self.processes.clear()

    def __enter__(self) -> Children:
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()


def python() -> str:
    return sys.executable


def uvicorn_argv(port: int, *extra: str) -> list[str]:
    return [
        python(),
        "-m",
        "uvicorn",
        "portal.asgi:application",
        "--host",
        HOST,
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
        "--backlog",
        "4096",
        # As in production (README, "Serving"): uvloop and httptools cut the server's own
        # CPU per request; Django does not speak the lifespan protocol.
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--lifespan",
        "off",
        *extra,
    ]


def worker_argv(pool: str, concurrency: int, queues: str = BENCH_QUEUE) -> list[str]:
    return [
        python(),
        "-m",
        "celery",
        "-A",
        "tests.bench.celery_app",
        "worker",
        "-Q",
        queues,
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "--loglevel",
        "WARNING",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


def fake_runtime_argv(port: int, delay: float) -> list[str]:
    return [python(), "-m", "tests.bench.fake_runtime", "--port", str(port), "--delay", str(delay)]


def write_result(path: str, result: dict) -> None:
    Path(path).write_text(json.dumps(result, indent=2, default=str))

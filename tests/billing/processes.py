"""Child processes against this test's database (the concurrency and crash proofs).

On PostgreSQL the children connect to the test database itself. On SQLite the
test database lives in memory, so the committed state is copied to a file the
children open, and the outcome is read back from that file.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from django.conf import settings
from django.db import connection

BASE_DIR = Path(__file__).resolve().parents[2]


def database_env(tmp_path) -> tuple[dict, Path | None]:
    """Environment for the child processes, pointing at this test's database."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DATABASE_OWNER_URL")}
    env["CELERY_BROKER_URL"] = "memory://"
    env["PORTAL_VAR_DIR"] = str(tmp_path / "var")
    if connection.vendor == "postgresql":
        config = connection.settings_dict
        name = config["NAME"]
        app = f"postgres://{config['USER']}@{config['HOST']}:{config['PORT']}/{name}"
        owner = settings.DATABASE_OWNER
        env["DATABASE_URL"] = app
        env["DATABASE_OWNER_URL"] = f"postgres://{owner['USER']}@{owner['HOST']}:{owner['PORT']}/{name}"
        for key in ("PASSWORD",):
            if config.get(key):
                env["PGPASSWORD"] = config[key]
        return env, None
    # SQLite: the test database is in memory; hand the processes a copy on disk.
    path = sqlite_file_copy(tmp_path / "proof.sqlite3")
    env["DATABASE_URL"] = f"sqlite:///{path}"
    env.pop("REDIS_URL", None)
    return env, path


def sqlite_file_copy(path: Path) -> Path:
    """Copy the in-memory SQLite test database to a file, already in WAL mode.

    The product's file is switched to WAL once, by the first connection (settings'
    init_command). Switching needs an exclusive lock, and SQLite answers "database is
    locked" at once, without waiting out the busy timeout, to the second of two
    connections that try it together: children that all open a fresh copy at the same
    moment would fail that way. So the copy is switched here, before any of them opens it.
    """
    target = sqlite3.connect(path)
    connection.ensure_connection()
    connection.connection.backup(target)
    target.execute("PRAGMA journal_mode=WAL")
    target.close()
    return path


def rows(path: Path | None, sql: str) -> list[tuple]:
    """Read the proof's outcome from the database the processes wrote."""
    if path is None:
        with tenant_context_all():
            with connection.cursor() as cursor:
                cursor.execute(sql)
                return cursor.fetchall()
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


def tenant_context_all():
    from tenants.context import all_tenants

    return all_tenants("concurrency proof: read the outcome")


def execute(path: Path | None, sql: str) -> None:
    """Write to the database the processes use (see rows())."""
    if path is None:
        with tenant_context_all(), connection.cursor() as cursor:
            cursor.execute(sql)
        return
    with sqlite3.connect(path) as db:
        db.execute(sql)

"""Run a block connected as the schema owner (DATABASE_OWNER_URL).

Only `migrate` and the test suite's database setup use this; the application
itself always connects as the role that row-level security applies to.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.conf import settings
from django.db import connections

_CREDENTIALS = ("USER", "PASSWORD", "HOST", "PORT")


@contextmanager
def as_owner(alias: str = "default") -> Iterator[None]:
    owner = settings.DATABASE_OWNER
    if owner is None:
        yield
        return
    connection = connections[alias]
    saved = {key: connection.settings_dict.get(key) for key in _CREDENTIALS}
    _close(connection)
    connection.settings_dict.update({key: owner.get(key) for key in _CREDENTIALS})
    try:
        yield
    finally:
        _close(connection)
        connection.settings_dict.update(saved)


def _close(connection) -> None:
    """Close the connection and, with a connection pool, the pool too: its connections
    were opened with the other role's credentials."""
    connection.close()
    if getattr(connection, "pool", None) is not None:
        connection.close_pool()

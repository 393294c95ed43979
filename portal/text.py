"""Text that is about to be stored: what PostgreSQL refuses and SQLite would take."""

from __future__ import annotations

from typing import Any


def without_nul(value: Any) -> Any:
    """`value` with every U+0000 dropped from its strings, dict keys included, at any depth.

    PostgreSQL's text and jsonb cannot hold the NUL character (SQLite can), so text from
    outside (model output, documents, policies) that reaches a save is cleaned, or checked
    with `without_nul(v) != v`, where it enters. Values without a NUL come back as they are.
    """
    if isinstance(value, str):
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(without_nul(item) for item in value)
    return value

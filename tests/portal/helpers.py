"""Helpers for API tests: the problem JSON every error answers with."""

from __future__ import annotations

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_KEYS = {"type", "title", "status", "detail"}


def problem(response, status: int) -> dict:
    """Assert `response` is an RFC 7807-style problem with `status`; return its body.

    The body has exactly type, title, status and detail, plus "errors" for
    validation errors (a 400 with field errors).
    """
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE
    body = response.json()
    assert set(body) - {"errors"} == PROBLEM_KEYS
    assert body["status"] == status
    assert isinstance(body["title"], str)
    assert isinstance(body["detail"], str)
    return body


def validation_problem(response) -> dict:
    """A 400 problem with field errors under "errors"."""
    body = problem(response, 400)
    assert set(body) == PROBLEM_KEYS | {"errors"}
    assert isinstance(body["errors"], dict)
    return body


def closed_port() -> int:
    """A port on the loopback that nothing listens on (bound, then closed): refused at once."""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]


def redis_cache(url: str) -> dict:
    """settings.CACHES with Django's cache in the Redis at `url`, as portal.settings sets it."""
    return {
        "default": {
            "BACKEND": "portal.cache.SharedRedisCache",
            "LOCATION": url,
            "OPTIONS": {"pool_class": "portal.cache.SharedConnectionPool"},
        }
    }

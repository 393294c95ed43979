"""Logging helpers referenced from settings.LOGGING."""

from __future__ import annotations

import copy
import logging


class ClientErrorsOnOneLine(logging.Formatter):
    """An expected 4xx (PermissionDenied, a bad request) prints one line, not a traceback.

    Django logs these at WARNING with the exception attached (django.utils.log.log_response),
    so every 403 a role check raised printed a full traceback and buried the real errors.
    The exception's message stays on the line; a 5xx and everything else keep their
    traceback. A formatter, not a filter: other handlers (an error tracker) still get the
    record as Django made it."""

    def format(self, record: logging.LogRecord) -> str:
        status = getattr(record, "status_code", None)
        if record.exc_info and isinstance(status, int) and status < 500:
            exc = record.exc_info[1]
            record = copy.copy(record)
            record.exc_info, record.exc_text = None, None
            if exc is not None and str(exc):
                return f"{super().format(record)} ({exc})"
        return super().format(record)

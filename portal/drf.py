"""DRF classes named in settings.REST_FRAMEWORK.

Kept apart from portal.api: DRF reads these settings in the class bodies of
rest_framework.views and .generics, which portal.api imports (a circular import).
"""

from __future__ import annotations

from rest_framework import exceptions, pagination, parsers


class JSONParser(parsers.JSONParser):
    """DRF's parser, but JSON nested too deeply for Python's parser is a 400, not a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply.")


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    # Unbounded, ?limit=99999999999999999999 overflows the SQL LIMIT (a 500).
    max_limit = 500

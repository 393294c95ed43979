"""DRF classes named in settings.REST_FRAMEWORK.

Kept apart from portal.api: DRF reads these settings in the class bodies of
rest_framework.views and .generics, which portal.api imports (a circular import).
"""

from __future__ import annotations

import json

from rest_framework import exceptions, pagination, parsers


class JSONParser(parsers.JSONParser):
    """DRF's parser, refusing with a 400 two kinds of JSON that would otherwise end in a 500."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
            # "\ud800" parses, but no UTF-8 can carry it: saving it, or an error
            # message that echoes it, would fail.
            json.dumps(data, ensure_ascii=False).encode()
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply.")
        except UnicodeEncodeError:
            raise exceptions.ParseError("JSON parse error - a string holds an unpaired surrogate.")
        return data


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    # Unbounded, ?limit=99999999999999999999 overflows the SQL LIMIT (a 500).
    max_limit = 500

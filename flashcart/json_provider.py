"""JSON answers encoded by orjson, through Flask's JSON provider API.

Every answer the API gives is JSON, so its encoder runs on every request. orjson
writes the same JSON as Flask's provider for what the API answers (keys sorted, dates
as Flask writes them, decimals and UUIDs as strings, dataclasses as objects) in a
fraction of the time; it writes non-ASCII characters as UTF-8 rather than as
`\\u` escapes, which any JSON reader takes alike. Whatever orjson refuses (an integer
past 64 bits) and pretty-printing (debug mode) go to Flask's own encoder. Decoding
stays the standard library's: json_bodies.py relies on its errors.
"""

import orjson
from flask import Flask
from flask.json.provider import DefaultJSONProvider

# Datetimes to `default` (Flask writes them as HTTP dates); keys that are not
# strings written as strings, as the standard library does.
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS


class OrjsonProvider(DefaultJSONProvider):
    def dumps(self, obj, **kwargs):
        # Flask's compact answers ask for separators alone; anything else (indent in
        # debug mode, a caller's own options) gets the standard library.
        if kwargs.keys() - {"separators"} or kwargs.get("separators", (",", ":")) != (",", ":"):
            return super().dumps(obj, **kwargs)
        options = _OPTIONS | orjson.OPT_SORT_KEYS if self.sort_keys else _OPTIONS
        try:
            return orjson.dumps(obj, default=self.default, option=options).decode()
        except orjson.JSONEncodeError:
            return super().dumps(obj, **kwargs)  # its answer, or its error


class FlashCartFlask(Flask):
    """Flask, with answers encoded by orjson."""

    json_provider_class = OrjsonProvider

"""Content-Type checks for JSON APIs (RFC 9110 §8.3.1), pure.

Requiring a JSON media type is what keeps a form on any web site from posting to a JSON API
from a browser: a cross-site form can only send ``text/plain``, ``multipart/form-data`` or
``application/x-www-form-urlencoded`` without a CORS preflight, and no surge endpoint answers
a preflight.
"""

from __future__ import annotations

import re

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[\t\x20-\x7e\x80-\xff])*"'
_MEDIA_TYPE = re.compile(rf"[ \t]*({_TOKEN})/({_TOKEN})[ \t]*")
_PARAMETER = re.compile(rf";[ \t]*(?:({_TOKEN})=({_TOKEN}|{_QUOTED}))?[ \t]*")


def json_media_type_problem(value: str | None) -> str | None:
    """None when ``value`` (a Content-Type field value) names JSON encoded as UTF-8:
    ``application/json`` or ``application/<anything>+json``, with any parameters, a
    ``charset`` among them only if it is ``utf-8``; otherwise what is wrong, for the 415."""
    if value is None:
        return "a JSON body needs Content-Type: application/json"
    match = _MEDIA_TYPE.match(value)
    if match is None:
        return f"Content-Type {value!r} is not a media type"
    kind, subtype = match.group(1).lower(), match.group(2).lower()
    if kind != "application" or not (subtype == "json" or (
            subtype.endswith("+json") and len(subtype) > len("+json"))):
        return f"Content-Type {kind}/{subtype} is not JSON; send application/json"
    position = match.end()
    while position < len(value):
        parameter = _PARAMETER.match(value, position)
        if parameter is None:
            return f"Content-Type {value!r} has malformed parameters"
        name, parameter_value = parameter.group(1), parameter.group(2)
        if name is not None and name.lower() == "charset":
            charset = parameter_value.strip('"').lower()
            if charset not in ("utf-8", "utf8"):
                return f"JSON is UTF-8; Content-Type names charset={charset}"
        position = parameter.end()
    return None

"""First match wins, by method and path prefix (``RouteSettings``).

A prefix matches a whole path segment: ``/images`` matches ``/images`` and ``/images/1``
but not ``/imagesx``; a prefix ending in ``/`` matches everything under it. A path that
matches only with another method gets 405 with ``Allow``; nothing at all gets 404. A route
with no methods takes any method but TRACE, which only a route that names it takes: a
target echoing requests back would show a script the client's cookies and credentials
(cross-site tracing), so it is opt-in, as nginx refuses TRACE outright.
"""

from __future__ import annotations

from dataclasses import dataclass

from surge.gateway.exchange import Request, ResponseWriter, RouteHandler
from surge.gateway.routes.replies import send_text

# What ``Allow`` lists for a route that takes any method, when asked for TRACE.
_ANY_BUT_TRACE = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


@dataclass(frozen=True, slots=True)
class RouteEntry:
    prefix: str
    methods: frozenset[str]  # empty: any method but TRACE
    handler: RouteHandler
    exact: bool = False  # the path must equal the prefix (built-ins like /health)

    def method_matches(self, method: str) -> bool:
        if not self.methods:
            return method != "TRACE"
        return method in self.methods or (method == "HEAD" and "GET" in self.methods)

    @property
    def allowed(self) -> tuple[str, ...]:
        return tuple(sorted(self.methods)) if self.methods else _ANY_BUT_TRACE


class NotFoundHandler:
    async def handle(self, request: Request, response: ResponseWriter) -> None:
        await send_text(response, 404, "Not Found\n")


class MethodNotAllowedHandler:
    def __init__(self, allowed: list[str]) -> None:
        self.allow = ", ".join(allowed).encode()

    async def handle(self, request: Request, response: ResponseWriter) -> None:
        await send_text(response, 405, "Method Not Allowed\n", [(b"allow", self.allow)])


class Router:
    def __init__(self, entries: list[RouteEntry]) -> None:
        self.entries = entries
        self._not_found = NotFoundHandler()

    def __call__(self, method: str, path: str) -> RouteHandler:
        return self.match(method, path)

    def match(self, method: str, path: str) -> RouteHandler:
        allowed: list[str] = []
        for entry in self.entries:
            # The path test is written out here, not a method: it runs for every route of
            # every request. (The module docstring says what matches.)
            prefix = entry.prefix
            if entry.exact:
                if path != prefix:
                    continue
            elif not path.startswith(prefix) or not (
                    len(path) == len(prefix) or prefix[-1] == "/" or path[len(prefix)] == "/"):
                continue
            if entry.method_matches(method):
                return entry.handler
            allowed.extend(m for m in entry.allowed if m not in allowed)
        if allowed:
            return MethodNotAllowedHandler(allowed)
        return self._not_found

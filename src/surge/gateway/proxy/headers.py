"""Header rewriting between client and target (pure).

Hop-by-hop headers describe one connection, so they are dropped in both directions: the
fixed list of RFC 9110 §7.6.1 plus every header the ``Connection`` header names. The
request gains the forwarding headers an ALB adds; Host is kept as the client sent it (the
server has already set it from an absolute-form target).
"""

from __future__ import annotations

import itertools

from surge.gateway.exchange import Headers

# RFC 9110 §7.6.1's connection-specific fields: dropped when forwarding, either way.
CONNECTION_SPECIFIC = frozenset({
    b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade",
    b"proxy-connection", b"proxy-authenticate", b"proxy-authorization",
})
# Replaced by our own values (forwarding headers) or by the body framing we choose.
_REPLACED_ON_REQUEST = frozenset({
    b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-port", b"x-real-ip",
    b"content-length", b"expect",
})
# The forwarding headers spelt with underscores ("X_Real_IP"), dropped as nginx drops every
# name with one: CGI and PSGI servers (Starman) map "_" and "-" alike, so the app would see
# the client's value joined before ours in HTTP_X_REAL_IP.
_FORWARDING_LOOKALIKES = frozenset(
    pieces[0] + b"".join(sep + piece for sep, piece in zip(seps, pieces[1:], strict=True))
    for pieces in (name.split(b"-") for name in (b"x-forwarded-for", b"x-forwarded-proto",
                                                   b"x-forwarded-port", b"x-real-ip"))
    for seps in itertools.product((b"-", b"_"), repeat=len(pieces) - 1)
    if b"_" in seps
)
# Everything request_head treats specially: dropped, replaced, or remembered.
_SPECIAL_ON_REQUEST = CONNECTION_SPECIFIC | _REPLACED_ON_REQUEST | _FORWARDING_LOOKALIKES
# Forwarding headers per (client, scheme, port); clients come back, so they are built once.
_FORWARDING_CACHE_SIZE = 4096
_forwarding: dict[tuple[str, str, int], tuple[bytes, bytes]] = {}


def connection_tokens(value: bytes) -> set[bytes]:
    """Header names listed in a ``Connection`` value (``close, X-Foo`` → {close, x-foo})."""
    return {token.strip().lower() for token in value.split(b",") if token.strip()}


def request_head(
    method: str,
    target: str,
    headers: Headers,
    *,
    client_host: str,
    scheme: str,
    server_port: int,
    body_length: int | None,
) -> bytes:
    """The request line and headers sent to the target, ready to write. ``body_length``
    None means a chunked body. One pass over the headers: this runs for every request."""
    parts = [f"{method} {target} HTTP/1.1\r\n".encode("latin-1")]
    forwarded_for = b""
    announced_length = False
    named: set[bytes] | None = None
    for name, value in headers:
        if name in _SPECIAL_ON_REQUEST:
            if name == b"x-forwarded-for":
                value = value.strip()
                if value:
                    forwarded_for = forwarded_for + b", " + value if forwarded_for else value
            elif name == b"content-length":
                announced_length = True
            elif name == b"connection":
                named = connection_tokens(value) if named is None \
                    else named | connection_tokens(value)
        elif not name.startswith(b"proxy-"):
            parts += (name, b": ", value, b"\r\n")
    if named and any(name in named for name, _ in headers):
        # Connection lists headers of its own (rare): drop them too, and start over.
        return request_head(method, target,
                            [(n, v) for n, v in headers if n not in named and n != b"connection"],
                            client_host=client_host, scheme=scheme, server_port=server_port,
                            body_length=body_length)
    client, forwarding = _forwarding_headers(client_host, scheme, server_port)
    parts += (b"x-forwarded-for: ", forwarded_for + b", " + client if forwarded_for else client,
              b"\r\n", forwarding)
    if body_length is None:
        parts.append(b"transfer-encoding: chunked\r\n")
    elif body_length > 0 or announced_length:
        # An empty POST keeps its "Content-Length: 0": some servers answer 411 without it.
        parts.append(b"content-length: %d\r\n" % body_length)
    parts.append(b"\r\n")
    return b"".join(parts)


def _forwarding_headers(client_host: str, scheme: str, server_port: int) -> tuple[bytes, bytes]:
    """The client address, and the X-Forwarded-Proto/-Port and X-Real-IP lines."""
    key = (client_host, scheme, server_port)
    cached = _forwarding.get(key)
    if cached is None:
        if len(_forwarding) >= _FORWARDING_CACHE_SIZE:
            _forwarding.clear()
        client = client_host.encode("latin-1")
        cached = (client, b"x-forwarded-proto: %b\r\nx-forwarded-port: %d\r\nx-real-ip: %b\r\n"
                  % (scheme.encode("latin-1"), server_port, client))
        _forwarding[key] = cached
    return cached
